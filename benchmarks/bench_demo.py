"""The demo against its own arithmetic, and where the rest of its time goes: one command, two tables.

    .venv/bin/python benchmarks/bench_demo.py [--skip-arithmetic] [--repeats N] [--set backends.local.preload=false]

1. The arithmetic alone: what the demo computes (config/demo.yaml: ResNet18 from scratch at 64 px, 6 classes;
   3 tuning trials of 2 epochs and a final training of 6, each epoch 240 training images at batch 16 and a
   48-image validation pass; the 60 test images once) in one process on random tensors, with as many threads as
   the demo's jobs get (the CPUs).
2. The demo's run as `make demo` makes it (`snakemake deploy report --configfile config/demo.yaml`, all cores)
   from empty results, into a scratch results folder, store and tracking store: its wall time beside the
   arithmetic's, then every job's start and end as Snakemake's own log has them (its verbose profile), and for
   the final training the job's own timeline (process start, first and last step, from its profiler/job.json).
With --repeats N, the arithmetic and the demo take turns N times: a small machine's speed drifts from minute to
minute (the arithmetic alone has ranged over ±15 % between runs), and the ratio is of the two medians. The job
table is the last run's. Numbers go into BENCHMARKS.md with the machine and date; nothing here is asserted.
"""

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "workflow"), str(REPO / "scripts")]
from dogbreed.checks import artifacts

SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def arithmetic(image_size=64, classes=6, train=240, valid=48, test=60, batch=16, trials=3, trial_epochs=2, epochs=6):
    """Seconds for the demo's forward and backward passes alone (random tensors, no loader, no recording)."""
    import torchvision

    torch.manual_seed(0)  # torch's default threads: one per CPU, as a job with workflow.cores gets
    images = torch.randn(train, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (train,))
    held_out = torch.randn(max(valid, test), 3, image_size, image_size).contiguous(memory_format=torch.channels_last)

    def one_job(job_epochs):
        model = torchvision.models.resnet18(num_classes=classes).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for _ in range(job_epochs):
            model.train()
            for start in range(0, train, batch):
                loss = torch.nn.functional.cross_entropy(
                    model(images[start : start + batch]), labels[start : start + batch]
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.inference_mode():
                for start in range(0, valid, batch):
                    model(held_out[start : start + batch])
        return model

    started = time.perf_counter()
    for _ in range(trials):
        one_job(trial_epochs)
    model = one_job(epochs)
    with torch.inference_mode():
        for start in range(0, test, batch):
            model(held_out[start : start + batch])
    return time.perf_counter() - started


# Snakemake's verbose log: a timestamp line, then the job it starts ("rule tune:") or ends ("Finished jobid: 5
# (Rule: tune)"); its format, not the workflow's.
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
STARTS = re.compile(r"^(?:local)?rule (\w+):$")
ENDS = re.compile(r"^Finished jobid: \d+ \(Rule: (\w+)\)$")


def job_times(log: str) -> dict:
    """{rule: (start, end)} in seconds from the run's first timestamp."""
    stamp, first, times = None, None, {}
    for line in log.splitlines():
        line = line.strip()
        if found := STAMP.match(line):
            stamp = datetime.strptime(found.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
            first = stamp if first is None else first
        elif (found := STARTS.match(line)) and stamp is not None:
            times[found.group(1)] = [stamp - first, None]
        elif (found := ENDS.match(line)) and stamp is not None and found.group(1) in times:
            times[found.group(1)][1] = stamp - first
    return times


def setting(text: str) -> dict:
    """--set backends.local.preload=false → {"backends": {"local": {"preload": False}}} (the value read as YAML)."""
    key, _, value = text.partition("=")
    nested = yaml.safe_load(value)
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def merged(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def demo_run(scratch: Path, settings=()) -> tuple:
    """(wall seconds, Snakemake's log, results folder) of the demo from empty results, with settings (--set) on top."""
    overlay = scratch / "bench.yaml"
    config = {
        "results_dir": str(scratch / "results-demo"),
        "store": {"uri": (scratch / "store").as_uri()},
        "tracking": {"uri": f"sqlite:///{scratch / 'mlflow.db'}"},
    }
    for each in settings:
        config = merged(config, setting(each))
    overlay.write_text(yaml.safe_dump(config))
    configs = ["--configfile", "config/demo.yaml", str(overlay)]
    started = time.perf_counter()
    run = subprocess.run(
        [str(SNAKEMAKE), "deploy", "report", *configs, "--workflow-profile", "profiles/verbose"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    subprocess.run([str(SNAKEMAKE), "teardown", *configs], cwd=REPO, capture_output=True)
    if run.returncode:
        sys.exit(f"the demo failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return wall, run.stdout + run.stderr, scratch / "results-demo"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-arithmetic", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="arithmetic and demo runs, taking turns")
    parser.add_argument("--set", action="append", default=[], help="a config setting for the demo, e.g. a.b=false")
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; torch {torch.__version__}"
    )
    alone, walls, accuracies, verdicts = [], [], [], set()
    for _ in range(args.repeats):
        if not args.skip_arithmetic:
            alone.append(arithmetic())
        with tempfile.TemporaryDirectory(prefix="bench-demo-") as scratch:
            wall, log, results = demo_run(Path(scratch), args.set)
            walls.append(wall)
            accuracies.append(json.loads((results / "evaluation/metrics.json").read_text())["accuracy"])
            rules = json.loads((results / "debugger/rules.json").read_text())["rules"]
            verdicts.add(", ".join(rule["rule"] for rule in rules if rule["verdict"] == "triggered") or "none")
            profile = artifacts.load_profile(results / "training/output/profiler")

    def shown(values):
        runs = f" (runs: {', '.join(f'{v:.1f}' for v in values)})" if len(values) > 1 else ""
        return f"{statistics.median(values):.1f}{runs}"

    print("\n| | seconds |\n|---|---|")
    if alone:
        print(f"| the demo's arithmetic alone | {shown(alone)} |")
    ratio = f", {statistics.median(walls) / statistics.median(alone):.1f}× its arithmetic" if alone else ""
    accuracy = ", ".join(sorted({f"{a:.3f}" for a in accuracies}))
    triggered = " / ".join(sorted(verdicts))  # one entry when every run's rules said the same
    print(
        f"| `make demo`'s run, empty results | {shown(walls)}{ratio}; test accuracy {accuracy}; rules triggered: {triggered} |"
    )
    print("\n| job | starts at (s) | takes (s) |\n|---|---|---|")
    for rule, (start, end) in sorted(job_times(log).items(), key=lambda item: item[1][0]):
        print(f"| {rule} | {start:.0f} | {'' if end is None else f'{end - start:.0f}'} |")
    started, steps = profile["job"]["process_started"], profile["steps"]
    print(
        f"\nthe final training's own timeline, seconds from its process start: first step "
        f"{steps['start'].min() - started:.1f}, last step ends {steps['end'].max() - started:.1f}"
    )


if __name__ == "__main__":
    main()
