import collections
import json
import math
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from dogbreed.backends.errors import JobFailed
from dogbreed.backends.local import LocalBackend
from dogbreed.training import metrics
from dogbreed.tuning import optuna_study, trial_jobs
from dogbreed.tuning import spec as tuning_spec

SPEC = {
    "objective": {"metric": "valid_accuracy", "regex": r"valid_accuracy=([0-9.]+)", "type": "Maximize"},
    "strategy": "Bayesian",
    "early_stopping": "Off",
    "max_jobs": 3,
    "max_parallel_jobs": 1,
    "parameters": {
        "lr": {"type": "continuous", "min": 0.001, "max": 0.1, "scaling": "Logarithmic"},
        "batch_size": {"type": "categorical", "values": [16, 32, 64]},
        "layers": {"type": "integer", "min": 1, "max": 4},
    },
}

# A stand-in training script (a real subprocess under the training contract): its accuracy peaks
# at lr = 0.01, so the tuner has something to find. `sleep` makes a job slow enough to be stopped.
FAKE_TRAIN = textwrap.dedent("""
    import argparse, json, math, os, time
    parser = argparse.ArgumentParser()
    for name in ("lr", "batch_size", "layers", "epochs", "sleep", "fail", "setup_fail", "diverge"):
        parser.add_argument("--" + name, type=float, default=0)
    args = parser.parse_args()
    assert os.environ["SM_CHANNEL_TRAIN"] and os.environ["SM_MODEL_DIR"]
    if args.setup_fail:  # as scripts/train.py says it: the weights or the data, whatever the lr
        raise SystemExit("job setup failed: weights file /nowhere.pth does not exist (model.weights in config)")
    if args.fail:
        raise SystemExit("planted failure")
    if args.diverge:  # what train.py prints when the loss went to NaN
        print("epoch=1 train_loss=nan train_accuracy=0.0 valid_loss=nan valid_accuracy=nan", flush=True)
        raise SystemExit(0)
    for epoch in range(1, int(args.epochs or 2) + 1):
        time.sleep(args.sleep)
        accuracy = max(0.0, 1 - abs(math.log10(args.lr) + 2) / 3) * epoch / (args.epochs or 2)
        print(f"epoch={epoch} train_loss=1.0 valid_loss=1.0 valid_accuracy={accuracy:.4f}", flush=True)
    open(os.path.join(os.environ["SM_MODEL_DIR"], "model.pth"), "w").write("weights")
""")


@pytest.fixture
def job_env(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "train.py").write_text(FAKE_TRAIN)
    (tmp_path / "train").mkdir()
    return {
        "backend": LocalBackend({}),
        "source": source,
        "jobs": tmp_path / "jobs",
        "channels": {"train": f"file://{tmp_path}/train", "valid": f"file://{tmp_path}/train"},
        "db": tmp_path / "study.sqlite",
    }


def runner(env, spec, fixed=None, name="study"):
    return trial_jobs.trial_runner(env["backend"], spec, fixed or {}, env["channels"], env["jobs"], env["source"], name)


def test_metric_lines_are_parsed_with_the_regex():
    line = "epoch=3 train_loss=0.912 train_accuracy=0.702 valid_loss=1.044 valid_accuracy=0.731 epoch_seconds=2.5"
    assert metrics.parse_epoch_line(line) == {
        "epoch": 3,
        "train_loss": 0.912,
        "train_accuracy": 0.702,
        "valid_loss": 1.044,
        "valid_accuracy": 0.731,
        "epoch_seconds": 2.5,
    }
    assert metrics.parse_epoch_line("training resnet18 on cpu") is None
    assert metrics.read_metric(SPEC["objective"]["regex"], line) == 0.731
    assert metrics.read_metric(r"valid_loss=([0-9.]+)", line) == 1.044
    assert metrics.read_metric(SPEC["objective"]["regex"], "valid_accuracy=n/a") is None


def test_spec_maps_to_optuna_distributions():
    study = optuna.create_study()
    trial = study.ask()
    for name, parameter in SPEC["parameters"].items():
        optuna_study.suggest(trial, name, parameter)
    distributions = trial.distributions
    assert distributions["lr"] == optuna.distributions.FloatDistribution(0.001, 0.1, log=True)
    assert distributions["batch_size"] == optuna.distributions.CategoricalDistribution([16, 32, 64])
    assert distributions["layers"] == optuna.distributions.IntDistribution(1, 4)


@pytest.mark.parametrize(
    "strategy, early_stopping, sampler, pruner",
    [
        ("Bayesian", "Off", optuna.samplers.TPESampler, optuna.pruners.NopPruner),
        ("Random", "Auto", optuna.samplers.RandomSampler, optuna.pruners.MedianPruner),
        ("Hyperband", "Off", optuna.samplers.TPESampler, optuna.pruners.HyperbandPruner),
    ],
)
def test_strategies_map_to_samplers_and_pruners(strategy, early_stopping, sampler, pruner):
    spec = {**SPEC, "strategy": strategy, "early_stopping": early_stopping}
    assert isinstance(optuna_study.make_sampler(spec, 0), sampler)
    assert isinstance(optuna_study.make_pruner(spec), pruner)


def test_grid_needs_categorical_parameters():
    grid = {**SPEC, "strategy": "Grid", "parameters": {"batch_size": {"type": "categorical", "values": [16, 32]}}}
    assert isinstance(optuna_study.make_sampler(grid, 0), optuna.samplers.GridSampler)
    with pytest.raises(tuning_spec.TuningError, match="Grid needs categorical parameters only.*lr, layers"):
        tuning_spec.check({**SPEC, "strategy": "Grid"})


def test_reverse_logarithmic_is_refused_before_any_trial(job_env):
    spec = {
        **SPEC,
        "parameters": {"lr": {"type": "continuous", "min": 0.1, "max": 0.9, "scaling": "ReverseLogarithmic"}},
    }
    with pytest.raises(tuning_spec.TuningError, match="ReverseLogarithmic"):
        optuna_study.run_study(spec, runner(job_env, spec), job_env["db"], "s", announce=False)


def test_study_runs_trials_as_jobs_and_resumes_when_max_jobs_grows(job_env):
    study = optuna_study.run_study(SPEC, runner(job_env, SPEC), job_env["db"], "study", announce=False)
    rows = optuna_study.trials_table(study, SPEC)
    assert [r["status"] for r in rows] == ["Completed"] * 3
    for row in rows:  # the objective is the last value the job printed
        expected = max(0.0, 1 - abs(math.log10(row["lr"]) + 2) / 3)
        assert row["valid_accuracy"] == pytest.approx(expected, abs=1e-4)
        hps = json.loads((job_env["jobs"] / row["job_name"] / "input/config/hyperparameters.json").read_text())
        assert float(hps["lr"]) == pytest.approx(row["lr"])
    best = optuna_study.best_trial(study, SPEC)
    assert best["objective"]["value"] == max(r["valid_accuracy"] for r in rows)

    grown = optuna_study.run_study(
        {**SPEC, "max_jobs": 5}, runner(job_env, SPEC), job_env["db"], "study", announce=False
    )
    assert len(grown.trials) == 5  # two new trials, the first three kept
    configurations = {(t.params["lr"], t.params["batch_size"], t.params["layers"]) for t in grown.trials}
    assert len(configurations) == 5  # the resumed study did not replay the first run's draws
    assert sorted(p.name for p in job_env["jobs"].iterdir()) == [f"study-trial-{i:03d}" for i in range(5)]
    again = optuna_study.run_study(
        {**SPEC, "max_jobs": 5}, runner(job_env, SPEC), job_env["db"], "study", announce=False
    )
    assert len(again.trials) == 5  # nothing left to do


def test_an_interrupted_trial_is_retried_with_its_hyperparameters(job_env):
    study = optuna.create_study(study_name="study", storage=f"sqlite:///{job_env['db']}", direction="maximize")
    killed = study.ask(
        {
            "lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True),
            "batch_size": optuna.distributions.CategoricalDistribution([16, 32, 64]),
            "layers": optuna.distributions.IntDistribution(1, 4),
        }
    )  # left RUNNING, as by a kill
    spec = {**SPEC, "max_jobs": 2}
    study = optuna_study.run_study(spec, runner(job_env, spec), job_env["db"], "study", announce=False)
    rows = optuna_study.trials_table(study, spec)
    assert [r["status"] for r in rows] == ["Failed", "Completed", "Completed"]
    assert rows[1]["retry_of"] == killed.number and rows[1]["lr"] == killed.params["lr"]


def test_a_trial_stopped_by_ctrl_c_is_retried_under_its_job_name(job_env):
    """Ctrl-C or Snakemake's SIGTERM: the trial ends Failed, and the rerun retries it (not counted against
    max_jobs) as the same job, which then resumes from that job's checkpoint."""
    spec = {**SPEC, "max_jobs": 2}
    real = runner(job_env, spec)

    def ctrl_c(step, value):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optuna_study.run_study(
            spec, lambda trial, hps, report: real(trial, hps, ctrl_c), job_env["db"], "study", announce=False
        )
    study = optuna_study.run_study(spec, real, job_env["db"], "study", announce=False)
    rows = optuna_study.trials_table(study, spec)
    assert [r["status"] for r in rows] == ["Failed", "Completed", "Completed"]
    assert rows[1]["retry_of"] == 0 and rows[1]["job_name"] == rows[0]["job_name"] == "study-trial-000"
    assert rows[1]["lr"] == rows[0]["lr"] and rows[2]["job_name"] == "study-trial-002"
    again = optuna_study.run_study(spec, real, job_env["db"], "study", announce=False)
    assert len(again.trials) == 3  # retried once, never again


def test_a_failed_trial_is_recorded_and_a_stopped_one_is_killed(job_env):
    spec = {**SPEC, "max_jobs": 2, "parameters": {"fail": {"type": "categorical", "values": [1, 2]}}}
    study = optuna_study.run_study(spec, runner(job_env, spec), job_env["db"], "fails", announce=False)
    assert {r["status"] for r in optuna_study.trials_table(study, spec)} == {"Failed"}
    with pytest.raises(optuna_study.NoTrialCompleted, match="no tuning trial completed") as caught:
        optuna_study.best_trial(study, spec)
    logs = str(caught.value).split("trials' logs (", 1)[1].rstrip(")").split(", ")
    assert len(logs) == 2 and all("planted failure" in Path(log).read_text() for log in logs)  # files that exist

    # A pruned trial: the job is stopped at its first metric line instead of sleeping through 50 epochs.
    stopped = []
    run_trial = runner(job_env, SPEC, fixed={"epochs": 50, "sleep": 1}, name="pruned")
    trial = optuna.create_study().ask({"lr": optuna.distributions.FloatDistribution(0.001, 0.1)})
    assert run_trial(trial, {"lr": 0.01}, lambda step, value: stopped.append(value) or True) is None
    assert len(stopped) == 1
    assert "epoch=2" not in (job_env["jobs"] / "pruned-trial-000/log.txt").read_text()


def test_a_failure_no_hyperparameters_would_change_stops_the_study_at_once(job_env, capsys):
    spec = {**SPEC, "max_jobs": 4}
    with pytest.raises(optuna_study.StudyStopped) as caught:
        optuna_study.run_study(spec, runner(job_env, spec, fixed={"setup_fail": 1}), job_env["db"], "setup")
    message = str(caught.value)
    assert (
        "\n" not in message
        and "/nowhere.pth does not exist" in message
        and "trial 0 failed before its first step" in message
    )
    assert "log: " in message and Path(message.split("(log: ")[1].split(")")[0]).is_file()
    assert len(list((job_env["jobs"]).iterdir())) == 1  # one job ran, not four
    assert capsys.readouterr().err.count("Traceback") == 0
    # fixed, the rerun runs all four trials: the one that stopped the study does not count
    study = optuna_study.run_study(spec, runner(job_env, spec), job_env["db"], "setup", announce=False)
    rows = optuna_study.trials_table(study, spec)
    assert [r["status"] for r in rows] == ["Failed"] + ["Completed"] * 4
    assert rows[1]["retry_of"] == 0 and rows[1]["lr"] == rows[0]["lr"]  # the trial it stopped at, run again


def test_the_trials_beside_one_that_stops_the_study_stop_at_once_and_are_retried(job_env):
    """Optuna waits for the other threads' trials to finish; here they stop with the study (each would train
    for 5 minutes), are recorded as interrupted, and the rerun retries them under their job names."""
    spec = {**SPEC, "max_jobs": 2}
    slow = runner(job_env, spec, fixed={"epochs": 600, "sleep": 0.5}, name="parallel")

    def run_trial(trial, hyperparameters, report):
        if trial.number == 0:
            return slow(trial, hyperparameters, report)
        log = job_env["jobs"] / "parallel-trial-000/log.txt"
        while not (log.is_file() and "epoch=1 " in log.read_text()):  # trial 0's job is under way
            time.sleep(0.1)
        raise optuna_study.StudyStopped("planted: no hyperparameters would help")

    with pytest.raises(optuna_study.StudyStopped, match="planted"):
        optuna_study.run_study(spec, run_trial, job_env["db"], "parallel", parallel=2, announce=False)
    assert "epoch=600" not in (job_env["jobs"] / "parallel-trial-000/log.txt").read_text()
    study = optuna.load_study(study_name="parallel", storage=f"sqlite:///{job_env['db']}")
    assert study.trials[0].user_attrs.get("interrupted") and study.trials[1].user_attrs.get("stopped_study")
    rerun = optuna_study.run_study(
        spec, runner(job_env, spec, name="parallel"), job_env["db"], "parallel", announce=False
    )
    retried = {t.user_attrs["retry_of"]: t.user_attrs["job_name"] for t in rerun.trials if "retry_of" in t.user_attrs}
    assert set(retried) == {0, 1} and retried[0] == "parallel-trial-000"  # resumed under its job name


def test_a_diverged_trial_fails_alone_even_where_the_regex_reads_numbers_only(job_env):
    spec = {**SPEC, "max_jobs": 2}
    study = optuna_study.run_study(
        spec, runner(job_env, spec, fixed={"diverge": 1}), job_env["db"], "nan", announce=False
    )
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]  # both ran: not a study stopper
    assert all("valid_accuracy is nan (the training diverged" in t.user_attrs["failure"] for t in study.trials)


def test_a_broken_environment_stops_the_study_too(job_env):
    (job_env["source"] / "train.py").write_text("import no_such_module_here\n")
    with pytest.raises(optuna_study.StudyStopped, match="ModuleNotFoundError: No module named 'no_such_module_here'"):
        optuna_study.run_study(SPEC, runner(job_env, SPEC), job_env["db"], "broken", announce=False)


def test_one_line_per_finished_trial(job_env, capsys):
    spec = {
        **SPEC,
        "max_jobs": 2,
        "parameters": {"fail": {"type": "categorical", "values": [0, 1]}, "lr": SPEC["parameters"]["lr"]},
    }
    study = optuna_study.run_study(spec, runner(job_env, spec), job_env["db"], "lines")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial ")]
    assert len(lines) == 2, lines
    for line, trial in zip(lines, study.trials):
        assert line.startswith(f"trial {trial.number} (") and f"fail={trial.params['fail']}" in line and " s [" in line
        if trial.params["fail"]:
            assert line.endswith("[Failed]") and "planted failure" in line and "log: " in line
        else:
            assert line.endswith("[Completed]") and f"valid_accuracy={trial.value:.4g}" in line


def test_a_failing_job_reports_the_end_of_its_log(job_env):
    with pytest.raises(JobFailed, match="planted failure"):
        job_env["backend"].train(
            "bad", {"fail": 1}, job_env["channels"], job_env["jobs"], job_env["source"], echo=False
        )


def test_parallel_trials_get_a_gpu_each_or_a_share_of_the_cpu_threads():
    assert trial_jobs.trial_resources(1, gpus=["0", "1"]) == [{}]  # one trial at a time: the whole machine
    assert [r["CUDA_VISIBLE_DEVICES"] for r in trial_jobs.trial_resources(2, gpus=["0", "1"], cpus=16)] == ["0", "1"]
    assert [r["CUDA_VISIBLE_DEVICES"] for r in trial_jobs.trial_resources(3, gpus=["4", "6"], cpus=16)] == [
        "4",
        "6",
        "4",
    ]
    assert trial_jobs.trial_resources(2, gpus=["0", "1"], cpus=16)[0]["SM_NUM_CPUS"] == "8"
    on_cpus = trial_jobs.trial_resources(2, gpus=[], cpus=8)
    assert on_cpus == [{"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "SM_NUM_CPUS": "4"}] * 2
    assert trial_jobs.trial_resources(4, gpus=[], cpus=2)[0]["OMP_NUM_THREADS"] == "1"


def test_a_trial_holds_its_slot_while_it_runs():
    """Two trials at once never share a slot: each job sees the environment of a slot no other holds."""
    import threading

    held, seen, lock = set(), [], threading.Lock()

    class Backend:
        def train(self, job_name, hyperparameters, channels, jobs_dir, source_dir, environment=None, **kwargs):
            slot = environment["CUDA_VISIBLE_DEVICES"]
            with lock:
                assert slot not in held
                held.add(slot)
                seen.append(slot)
            threading.Event().wait(0.2)
            with lock:
                held.discard(slot)
            kwargs["on_line"]("epoch=1 train_loss=1 train_accuracy=0.5 valid_loss=1 valid_accuracy=0.5")
            return {"status": "Completed", "log": "", "seconds": 0.2}

    spec = {"objective": {"metric": "valid_accuracy", "regex": r"valid_accuracy=([0-9.]+)"}}
    run = trial_jobs.trial_runner(
        Backend(), spec, {}, {}, "jobs", "src", "study", trial_jobs.trial_resources(2, gpus=["0", "1"])
    )

    class Trial:
        number, user_attrs = 0, {}

        def set_user_attr(self, key, value):
            pass

    threads = [threading.Thread(target=run, args=(Trial(), {}, lambda step, value: False)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(seen)) == ["0", "1"] and len(seen) == 6


def test_parallel_threads_never_take_the_same_retried_trial(tmp_path):
    """Sixteen interrupted trials retried eight at a time: each retry runs once. Optuna's threads take a queued
    trial by reading it WAITING and writing it RUNNING; on SQLite two of them could take the same one (and run
    its job twice in one folder) unless the storage serialises that change."""
    db = tmp_path / "study.sqlite"
    left = optuna.create_study(study_name="retried", storage=f"sqlite:///{db}", direction="maximize")
    for number in range(16):  # a killed tune's trials: RUNNING, each with its job name
        trial = left.ask({"lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True)})
        trial.set_user_attr("job_name", f"retried-trial-{number:03d}")
    ran = collections.Counter()

    def run_trial(trial, hyperparameters, report):
        ran[trial.user_attrs["job_name"]] += 1
        time.sleep(0.05)  # the threads overlap while each job runs
        return hyperparameters["lr"]

    spec = {**SPEC, "max_jobs": 16, "parameters": {"lr": SPEC["parameters"]["lr"]}}
    optuna_study.run_study(spec, run_trial, db, "retried", parallel=8, announce=False)
    assert ran == {f"retried-trial-{number:03d}": 1 for number in range(16)}
