"""What the training job's self-recording costs, per job kind: one command, one table.

    .venv/bin/python benchmarks/bench_recording.py [--only demo,finetune,head] [--repeats 2] [--code DIR]

For each job kind it runs scripts/train.py (in a process of its own, as the workflow does) with recording off,
with the profiler (system metrics + step timings), and with the profiler and the debug record at the workflow's
defaults (profiling: save_interval 10, sampling_interval_ms 500), and prints the training loop's wall time:
every epoch's steps, validation included, and what the job does at each epoch's end (its record flushed, the
checkpoint), from the loop's first step to its last epoch's end. The job kinds:
  demo      config/demo.yaml's final training: ResNet18 from scratch at 64 px, 240 images, batch 16, 6 epochs
  finetune  fine-tuning the whole pretrained network at 224 px (random weights stand in: same arithmetic), 96
            images, batch 16, 2 epochs
  head      a frozen backbone's head on cached features (the feature cache's channels), 3,000 feature rows of
            133 classes, batch 32, 10 epochs
Repeats alternate the recordings (off, profiler, both, off, ...) so a machine's drift spreads over all three;
the table has each one's fastest run. --code times another checkout's job code (its scripts/ folder, e.g. a
`git worktree` of an older commit), for a before/after on the same data. Numbers go into BENCHMARKS.md with the
machine and date.
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "scripts"))
from dogbreed.data import demo_data

# the training loop timed inside the job's own process: train.main with train_epochs wrapped
TIMED_JOB = """
import sys, time, json
sys.path.insert(0, {scripts!r})
import train
loop = train.train_epochs
def timed(*args, **kwargs):
    started = time.perf_counter()
    try:
        return loop(*args, **kwargs)
    finally:
        print("LOOP_SECONDS=" + json.dumps(time.perf_counter() - started), flush=True)
train.train_epochs = timed
train.main(sys.argv[1:])
"""

RECORDINGS = {
    "off": ["--profile", "false", "--debug", "false"],
    "profiler": ["--profile", "true", "--debug", "false"],
    "profiler + debug": ["--profile", "true", "--debug", "true", "--save_interval", "10"],
}


def head_channels(folder: Path) -> tuple:
    """A feature cache's train and valid channels (scripts/feature_cache.py's format) of random features, as
    extract_features writes them for a frozen ResNet18 at 224 px: 512 numbers an image, 3 views of the training
    images, 133 classes."""
    import classifier
    import feature_cache

    torch.manual_seed(0)
    spec = classifier.preprocessing_spec(224, 256)
    classes = {str(i): f"breed_{i + 1:03d}" for i in range(133)}
    for split, rows, views in (("train", 3000, 3), ("valid", 400, 1)):
        info = {**feature_cache.feature_spec("resnet18", "none", spec), "views": views, "classes": classes}
        labels = torch.arange(rows) % 133
        feature_cache.write_channel(folder / split, torch.randn(views, rows, 512), labels, info)
    backbone = classifier.backbone_state(classifier.build_model("resnet18", 133, "none"))
    torch.save(backbone, folder / "train" / feature_cache.BACKBONE_FILE)
    return str(folder / "train"), str(folder / "valid")


def job_kinds(scratch: Path) -> dict:
    """{kind: (train channel, valid channel, flags)}"""
    demo = demo_data.generate(scratch / "demo", corrupt_file=False)
    finetune = demo_data.generate(scratch / "finetune", per_split={"train": 16, "valid": 4}, corrupt_file=False)
    return {
        "demo": (
            f"{demo}/train",
            f"{demo}/valid",
            ["--image_size", "64", "--batch_size", "16", "--epochs", "6", "--lr", "0.007"],
        ),
        "finetune": (
            f"{finetune}/train",
            f"{finetune}/valid",
            ["--image_size", "224", "--batch_size", "16", "--epochs", "2", "--lr", "0.001"],
        ),
        "head": lambda: (
            *head_channels(scratch / "features"),
            ["--freeze_backbone", "true", "--batch_size", "32", "--epochs", "10", "--lr", "0.01"],
        ),
    }


def run(code, train, valid, flags, recording, out: Path) -> float:
    command = [
        sys.executable,
        "-c",
        TIMED_JOB.format(scripts=str(code)),
        f"--train={train}",
        f"--valid={valid}",
        f"--model_dir={out}/model",
        f"--output_data_dir={out}/output",
        f"--checkpoint_dir={out}/checkpoints",
        "--weights=none",
        "--num_workers=-1",
        *flags,
        *RECORDINGS[recording],
    ]
    job = subprocess.run(command, capture_output=True, text=True)
    if job.returncode:
        sys.exit(f"the {recording} job failed:\n{job.stdout[-2000:]}\n{job.stderr[-2000:]}")
    line = next(line for line in job.stdout.splitlines() if line.startswith("LOOP_SECONDS="))
    return json.loads(line.split("=", 1)[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="demo,finetune,head")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--code", type=Path, default=REPO / "scripts", help="the job code to time (a scripts/ folder)")
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
        f"torch {torch.__version__}; job code {args.code}"
    )
    print("\n| job kind | off (s) | profiler (s) | profiler + debug (s) | recording's cost |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as scratch:
        scratch = Path(scratch)
        kinds = job_kinds(scratch)
        for kind in args.only.split(","):
            made = kinds[kind]
            train, valid, flags = made() if callable(made) else made
            best = {}
            for repeat in range(args.repeats):
                for recording in RECORDINGS:
                    seconds = run(args.code, train, valid, flags, recording, scratch / f"{kind}-{recording}-{repeat}")
                    best[recording] = min(best.get(recording, seconds), seconds)
            off = best["off"]
            print(
                f"| {kind} | {off:.2f} | {best['profiler']:.2f} | {best['profiler + debug']:.2f} | "
                f"{100 * (best['profiler'] / off - 1):+.0f} % / {100 * (best['profiler + debug'] / off - 1):+.0f} % |"
            )


if __name__ == "__main__":
    main()
