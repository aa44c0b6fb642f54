"""A healthy real (tiny) training job triggers no Debugger/ProfilerReport rule, and what it records is
complete and small; StepOutlier and the GPU rules are checked on synthetic metric files in the recorded
format; the report's sections; the job's debug record. Planted faults: test_training_rule_faults.py."""

import json
import math
import os
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dogbreed.checks import artifacts, profiler_checks, run_checks
from dogbreed.reporting import profiler_page
from training_lab import BASE, run_job, verdicts

ON_CPU = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def healthy(lab):
    # batch 16: a healthy configuration whose 10-step windows of minibatch losses (LossNotDecreasing)
    # are not dominated by which 8 images a batch happened to draw
    return run_job(lab, "healthy", {**BASE, "weights": lab["pretrained"], "batch_size": 16})


def test_a_healthy_job_triggers_nothing(healthy):
    seen = verdicts(healthy)
    for rule in (
        "LossNotDecreasing",
        "VanishingGradient",
        "ExplodingTensor",
        "Overfit",
        "Overtraining",
        "PoorWeightInitialization",
        "ClassImbalance",
        "Dataloader",
        "StepOutlier",
        "MaxInitializationTime",
        "OverallSystemUsage",
    ):
        assert seen[rule] == "ok", (rule, seen)
    if ON_CPU:
        for rule in ("LowGPUUtilization", "BatchSize", "CPUBottleneck", "IOBottleneck", "GPUMemoryIncrease"):
            assert seen[rule] == "not_applicable"
    assert seen["LoadBalancing"] == "not_applicable"  # one process


def test_the_recording_is_complete_and_small(healthy):
    output = Path(healthy["output_dir"]) / "data"
    debug = artifacts.load_debug(output / "debug")
    assert set(debug["losses"]["mode"]) == {"TRAIN", "EVAL"}
    assert set(debug["tensors"]["collection"]) == {"weights", "biases", "gradients", "relu_input"}
    assert debug["tensors"]["l2"].notna().all() and len(debug["labels"]) > 0
    profile = artifacts.load_profile(output / "profiler")
    assert len(profile["system"]) >= 5 and {"cpu_total", "memory_percent", "disk_read_bytes", "net_recv_bytes"} <= set(
        profile["system"]
    )
    assert len(profile["steps"]) == 4 * (
        7 + 2
    )  # 4 epochs of 7 train (120 images, the last dropped) and 2 valid batches
    assert (profile["steps"]["data_wait_s"] >= 0).all() and (profile["steps"]["compute_s"] > 0).all()
    size = sum(p.stat().st_size for p in (output / "debug").rglob("*") if p.is_file())
    saved_steps = debug["tensors"]["step"].nunique()
    assert size / saved_steps < 300_000  # reductions, not full tensors (ResNet18's weights alone are 45 MB)


def fixed_step_timings(stalls, stall_s=0.5, steps_per_epoch=60, epochs=4):
    """Step timings as instrumentation.py records them: seeded CPU noise around 40 ms, and
    `stalls` train steps that waited stall_s for data."""
    rng = np.random.default_rng(0)
    rows = []
    for epoch in range(1, epochs + 1):
        for step in range(steps_per_epoch):
            rows.append(
                {
                    "phase": "train",
                    "epoch": epoch,
                    "step": step,
                    "data_wait_s": 0.002,
                    "compute_s": float(rng.lognormal(np.log(0.04), 0.25)),
                }
            )
    for row in rng.choice(len(rows), size=stalls, replace=False):
        rows[row]["data_wait_s"] += stall_s
    frame = pd.DataFrame(rows)
    frame["duration_s"] = frame["data_wait_s"] + frame["compute_s"]
    return {"steps": frame, "system": pd.DataFrame(), "job": {}}


@pytest.mark.parametrize("stalls, verdict", [(0, "ok"), (5, "ok"), (12, "triggered")])
def test_step_outlier_on_fixed_timings(stalls, verdict):
    result = profiler_checks.step_outlier(fixed_step_timings(stalls))
    assert result["verdict"] == verdict, result["evidence"]
    assert result["evidence"]["outliers"] >= stalls  # every stall stands out; more than n_outliers=10 trigger


# --- GPU rules on synthetic metric files (this machine has no GPU) ------------------------------
def write_profile(folder, samples, workers=4, cores=4):
    """Metric files in the format scripts/instrumentation.py records."""
    folder.mkdir(parents=True)
    with open(folder / "system.jsonl", "w") as out:
        out.writelines(
            json.dumps(
                {
                    "timestamp": 1000 + i * 0.5,
                    "cpu_percent": [cpu] * cores,
                    "memory_percent": 20.0,
                    "memory_used_mb": 1000,
                    "disk_read_bytes": 0,
                    "disk_write_bytes": 0,
                    "net_recv_bytes": 0,
                    "net_sent_bytes": 0,
                    "iowait_percent": iowait,
                    "gpus": [{"utilization_percent": gpu, "memory_used_mb": memory * 800, "memory_percent": memory}],
                }
            )
            + "\n"
            for i, (cpu, gpu, memory, iowait) in enumerate(samples)
        )
    with open(folder / "steps.jsonl", "w") as out:
        out.writelines(
            json.dumps(
                {
                    "phase": "train",
                    "epoch": 1,
                    "step": step,
                    "start": 1001 + step * 0.1,
                    "data_wait_s": 0.005,
                    "compute_s": 0.095,
                    "end": 1001 + step * 0.1 + 0.1,
                }
            )
            + "\n"
            for step in range(50)
        )
    (folder / "job.json").write_text(
        json.dumps(
            {
                "process_started": 1000,
                "cpu_count": cores,
                "num_workers": workers,
                "batch_size": 32,
                "device": "cuda",
                "gpu_count": 1,
            }
        )
    )
    return folder.parent


GPU_RULES = ["LowGPUUtilization", "BatchSize", "CPUBottleneck", "IOBottleneck", "GPUMemoryIncrease"]


@pytest.mark.parametrize(
    "name, samples, triggered",
    [
        ("busy", [(60, 95, 80, 0)] * 1200, set()),
        ("idle", [(30, 20, 30, 0)] * 1200, {"LowGPUUtilization", "BatchSize"}),
        ("cpu_bound", [(97, 5, 80, 0)] * 1200, {"LowGPUUtilization", "CPUBottleneck"}),
        ("io_bound", [(40, 5, 80, 70)] * 1200, {"LowGPUUtilization", "IOBottleneck"}),
        ("leak", [(60, 95, 50 + 40 * i / 1200, 0) for i in range(1200)], {"GPUMemoryIncrease"}),
    ],
)
def test_gpu_rules_on_synthetic_metrics(tmp_path, name, samples, triggered):
    output = write_profile(tmp_path / "data/profiler", samples)
    results = {r["rule"]: r["verdict"] for r in run_checks.evaluate(output)["rules"]}
    assert {rule for rule in GPU_RULES if results[rule] == "triggered"} == triggered
    assert all(results[rule] in ("ok", "triggered") for rule in GPU_RULES)
    assert results["Dataloader"] == "ok"


def test_rule_settings_are_checked(tmp_path):
    output = write_profile(tmp_path / "data/profiler", [(60, 95, 80, 0)] * 10)
    with pytest.raises(run_checks.RuleConfigError, match="unknown rule"):
        run_checks.evaluate(output, {"NoSuchRule": {}})
    with pytest.raises(run_checks.RuleConfigError, match="unknown parameter"):
        run_checks.evaluate(output, {"StepOutlier": {"sigma": 2}})
    results = run_checks.evaluate(output, {"ClassImbalance": False, "Dataloader": {"max_wait_percent": 2}})
    names = {r["rule"]: r for r in results["rules"]}
    assert "ClassImbalance" not in names
    assert names["Dataloader"]["verdict"] == "triggered" and names["Dataloader"]["parameters"]["max_wait_percent"] == 2


@pytest.mark.parametrize("stalls, workers, verdict", [(0, 0, "ok"), (40, 0, "triggered"), (0, 16, "ok")])
def test_dataloader_judges_the_measured_wait_not_the_worker_count(stalls, workers, verdict):
    # 0 workers on 4 cores is SageMaker's trigger by itself; here only a loader that holds up the steps is
    profile = {**fixed_step_timings(stalls), "job": {"num_workers": workers, "cpu_count": 4}}
    result = profiler_checks.dataloader(profile)
    assert result["verdict"] == verdict, result["evidence"]
    assert result["evidence"]["workers"] == ("too few" if workers == 0 else "too many")


def test_every_rule_says_how_it_differs_from_sagemakers():
    for name, (kind, function) in run_checks.ALL_RULES.items():
        description, versus = run_checks.describe(function)
        assert description and versus and "\n" not in versus, name


# --- the report ---------------------------------------------------------------------------------
class Outline(HTMLParser):
    def __init__(self):
        super().__init__()
        self.headings, self.ids, self.images, self.external, self._in = [], set(), 0, [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h2", "h3"):
            self._in = tag
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images += 1
            if not attrs.get("src", "").startswith("data:image/png;base64,"):
                self.external.append(attrs.get("src"))
        if tag in ("script", "link") and (attrs.get("src") or attrs.get("href")):
            self.external.append(attrs.get("src") or attrs.get("href"))

    def handle_data(self, data):
        if self._in == "h2" and data.strip():
            self.headings.append(data.strip())
        self._in = None


def test_the_report_has_sagemakers_sections_and_every_rule(healthy):
    output = Path(healthy["output_dir"]) / "data"
    rules = run_checks.evaluate(output)
    page = profiler_page.build_report(
        healthy,
        rules,
        artifacts.load_debug(output / "debug"),
        artifacts.load_profile(output / "profiler"),
        pd.DataFrame(healthy["metrics"]),
    )
    outline = Outline()
    outline.feed(page)
    assert outline.headings == [
        "Training job summary",
        "System usage statistics",
        "Framework metrics summary",
        "Rules summary",
        "Rules",
    ]
    assert outline.ids == set(run_checks.ALL_RULES)  # one section per rule
    assert outline.images >= 10 and outline.external == []  # plots embedded: opens with no network
    summary = page.split("<h2>Rules summary</h2>")[1].split("<h2>Rules</h2>")[0]
    for rule in run_checks.ALL_RULES:
        assert f'href="#{rule}"' in summary
    assert "not_applicable" in summary if ON_CPU else True
    assert "(the job ran on one process)" in summary  # each not_applicable says why


def test_the_debug_record_saves_every_nth_step_of_each_mode_as_smdebug_names_it(tmp_path):
    """Steps numbered over both modes; every save_interval-th step of a mode saved: weights before the forward pass,
    the inputs of modules named relu as they come in (before an in-place ReLU overwrites them), gradients in
    training only and unscaled by AMP's GradScaler; no hook left on the network between saved steps (what keeps a
    step that is not saved cheap), nor after a step that raised."""
    import instrumentation

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.relu, self.fc2 = torch.nn.Linear(4, 8), torch.nn.ReLU(inplace=True), torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.fc2(self.relu(self.fc1(x)))

    torch.manual_seed(0)
    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # gradients 1024× until unscaled
    record = instrumentation.DebugRecord(tmp_path / "debug", net, save_interval=2)
    inputs, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    weights_before, relu_input_min, gradient_max, hooked = [], [], [], []
    for training in (True, True, True, False, False):
        weights_before.append(net.fc1.weight.detach().clone())
        record.begin_step(training)
        with torch.set_grad_enabled(training):
            hidden = net.fc1(inputs)
            relu_input_min.append(float(hidden.detach().min()))
            logits = net.fc2(net.relu(hidden))
            loss = torch.nn.functional.cross_entropy(logits, labels)
            if training:
                (gradient,) = torch.autograd.grad(loss, net.fc2.weight, retain_graph=True)
                gradient_max.append(float(gradient.max()))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        record.end_step(loss.item(), labels, logits.argmax(1))
        hooked.append(bool(net.relu._forward_pre_hooks))
    record.flush()
    assert not any(hooked)
    debug = artifacts.load_debug(tmp_path / "debug")
    assert debug["losses"]["step"].tolist() == [0, 1, 2, 3, 4] and debug["labels"]["step"].nunique() == 5
    tensors = debug["tensors"]
    saved = tensors.groupby(["step", "mode"])["collection"].apply(lambda c: sorted(set(c))).to_dict()
    assert saved == {  # TRAIN steps 0 and 2 of their mode, EVAL step 0 (global step 3)
        (0, "TRAIN"): ["biases", "gradients", "relu_input", "weights"],
        (2, "TRAIN"): ["biases", "gradients", "relu_input", "weights"],
        (3, "EVAL"): ["biases", "relu_input", "weights"],
    }
    assert {"Net_fc1.weight", "Net_fc2.bias", "gradient/Net_fc2.weight", "relu_input_0"} <= set(tensors["tensor"])
    row = tensors[(tensors["step"] == 2) & (tensors["tensor"] == "Net_fc1.weight")].iloc[0]
    assert row["max"] == pytest.approx(float(weights_before[2].max()))
    assert row["variance"] == pytest.approx(float(weights_before[2].double().var(correction=0)))
    assert row["l2"] == pytest.approx(float(weights_before[2].norm()))
    relu = tensors[(tensors["step"] == 2) & (tensors["tensor"] == "relu_input_0")].iloc[0]
    assert relu["min"] == pytest.approx(relu_input_min[2]) and relu["min"] < 0  # the input, not the ReLU's output
    grad = tensors[(tensors["step"] == 2) & (tensors["tensor"] == "gradient/Net_fc2.weight")].iloc[0]
    assert grad["max"] == pytest.approx(gradient_max[2]) and grad["abs_mean"] > 0  # unscaled
    assert record.state() == {"step": 4, "mode_steps": {"TRAIN": 2, "EVAL": 1}}

    record.begin_step(True)  # TRAIN step 3 of its mode: not saved
    record.begin_step(True)  # step 4, saved; its forward pass raises: the hooks stay until the next step begins
    assert net.relu._forward_pre_hooks
    record.begin_step(True)  # step 5, not saved
    assert not net.relu._forward_pre_hooks
    record.end_step(0.5, labels, labels)
    record.flush()
    assert max(json.loads(line)["step"] for line in (tmp_path / "debug/tensors.jsonl").read_text().splitlines()) == 3


def test_a_nan_anywhere_in_a_tensor_shows_in_its_reductions():
    import instrumentation
    import torch

    values = instrumentation.reductions("weights", torch.tensor([1.0, float("nan"), -2.0]))
    assert set(values) == {"max", "min", "variance", "abs_max", "l2"}
    assert all(math.isnan(float(values[name])) for name in ("max", "min", "l2"))


def test_the_sampler_records_gpus_through_nvml(tmp_path, monkeypatch):
    """The NVML path, with a stand-in for the driver library (this machine has no GPU)."""
    import time as clock
    import types

    import instrumentation

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=40 + h),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=2 * 2**30, total=8 * 2**30),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with instrumentation.SystemMonitor(tmp_path / "system.jsonl", interval=0.05):
        clock.sleep(0.3)
    samples = [json.loads(line) for line in (tmp_path / "system.jsonl").read_text().splitlines()]
    assert len(samples) >= 3
    assert samples[0]["gpus"] == [
        {"utilization_percent": 40, "memory_used_mb": 2048.0, "memory_percent": 25.0},
        {"utilization_percent": 41, "memory_used_mb": 2048.0, "memory_percent": 25.0},
    ]
    assert len(samples[0]["cpu_percent"]) == os.cpu_count()
    profile = artifacts.load_profile(tmp_path)
    assert artifacts.has_gpu(profile) and profile["system"]["gpu_utilization"].iloc[0] == 40.5


# --- the debugger rules on fixed losses: warm-up and single bad windows are not failures ----------
def epoch_losses_table(train, valid, steps=10):
    """Saved losses as the debug record keeps them: `steps` TRAIN steps at train[i], then 2 EVAL steps at valid[i]."""
    rows, step = [], 0
    for train_loss, valid_loss in zip(train, valid):
        for _ in range(steps):
            rows.append({"step": step, "mode": "TRAIN", "loss": train_loss})
            step += 1
        for _ in range(2):
            rows.append({"step": step, "mode": "EVAL", "loss": valid_loss})
            step += 1
    return {"losses": pd.DataFrame(rows)}


# the demo's own curve: batch norm settling, the validation loss hundreds of times the training loss, falling
WARM_UP = ([2.56, 3.0, 3.37, 2.51, 1.34, 1.24], [549.0, 86.1, 5.46, 1.92, 1.23, 1.07])
MEMORISING = ([1.0, 0.4, 0.15, 0.05, 0.02, 0.01], [1.0, 0.8, 0.85, 0.95, 1.1, 1.3])


def test_overfit_skips_warm_up_and_needs_a_widening_gap():
    from dogbreed.checks import debugger_checks

    assert debugger_checks.overfit(epoch_losses_table(*WARM_UP))["verdict"] == "ok"
    result = debugger_checks.overfit(epoch_losses_table(*MEMORISING))
    assert result["verdict"] == "triggered" and len(result["triggered_steps"]) >= 3
    # a gap that jumps with the training loss (a too-high learning rate) is not overfitting either
    assert debugger_checks.overfit(epoch_losses_table([1.5, 1.66, 1.8, 0.8], [24.0, 37.6, 3.1, 0.6]))["verdict"] == "ok"
    assert debugger_checks.overtraining(epoch_losses_table(*WARM_UP))["verdict"] == "ok"


def test_loss_not_decreasing_needs_a_sustained_climb():
    from dogbreed.checks import debugger_checks

    def losses(values):  # one window of 10 steps per value
        return {
            "losses": pd.DataFrame(
                [{"step": i, "mode": "TRAIN", "loss": v} for i, v in enumerate(np.repeat(values, 10))]
            )
        }

    assert debugger_checks.loss_not_decreasing(losses([2.5, 3.4, 2.4, 4.4, 2.5, 2.0, 1.4, 1.1]))["verdict"] == "ok"
    climbing = debugger_checks.loss_not_decreasing(losses([2.5, 2.4, 2.8, 3.0, 3.2, 2.0, 1.4]))
    assert climbing["verdict"] == "triggered" and climbing["triggered_steps"] == [49]  # the third window in a row
    assert debugger_checks.loss_not_decreasing(losses([2.5, np.nan, 2.0, 1.0]))["triggered_steps"] == [19]
    assert debugger_checks.loss_not_decreasing(losses([2.5, 2.4, 2.6, 2.5]))["verdict"] == "triggered"  # never learnt


def test_class_imbalance_blames_the_data_only_for_classes_it_is_short_of():
    from dogbreed.checks import debugger_checks

    def labels(counts, wrong_class):
        """Two epochs of TRAIN predictions (class `wrong_class` always wrong in the last), an EVAL step between."""
        rows = []
        for epoch, first_step in ((1, 0), (2, 1000)):
            step = first_step
            for label, count in enumerate(counts):
                for _ in range(count):
                    wrong = epoch == 2 and label == wrong_class
                    rows.append(
                        {
                            "step": step,
                            "mode": "TRAIN",
                            "label": label,
                            "prediction": (label + 1) % len(counts) if wrong else label,
                        }
                    )
                    step += 1
            rows.append({"step": first_step + 999, "mode": "EVAL", "label": 0, "prediction": 0})
        return {"labels": pd.DataFrame(rows), "class_names": ["001.A", "002.B", "003.C"]}

    balanced = debugger_checks.class_imbalance(labels([20, 20, 20], wrong_class=2))
    assert balanced["verdict"] == "ok" and balanced["evidence"]["mispredicted_but_not_rare"] == ["003.C"]
    rare = debugger_checks.class_imbalance(labels([20, 20, 6], wrong_class=2))
    assert rare["verdict"] == "triggered" and rare["evidence"]["mispredicted_breeds"] == ["003.C"]
