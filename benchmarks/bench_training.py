"""Training throughput and what the job's self-recording costs, on this machine.

    .venv/bin/python benchmarks/bench_training.py [--image-size 224] [--batch-size 16] [--images 96]

Trains ResNet18 from scratch for one epoch on generated images with recording off, with the profiler
(system metrics + step timings), and with the profiler and the smdebug hook (save_interval 10 and 1),
then prints a markdown table: seconds per epoch, training images per second, the hook's size per
saved step. Numbers go into BENCHMARKS.md with the machine they came from.
"""

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from dogbreed.data import demo_data


def run(data, out, image_size, batch_size, extra):
    command = [
        sys.executable,
        str(REPO / "scripts/train.py"),
        "--train",
        f"{data}/train",
        "--valid",
        f"{data}/valid",
        "--model_dir",
        f"{out}/model",
        "--output_data_dir",
        f"{out}/output",
        "--checkpoint_dir",
        f"{out}/ckpt",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--image_size",
        str(image_size),
        "--batch_size",
        str(batch_size),
        "--num_workers",
        "2",
        *extra,
    ]
    log = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    steps_file = Path(out) / "output/profiler/steps.jsonl"
    train_seconds = None
    if steps_file.exists():
        steps = [json.loads(line) for line in steps_file.read_text().splitlines()]
        train_seconds = sum(s["end"] - s["start"] for s in steps if s["phase"] == "train")
    debug = Path(out) / "output/debug"
    size = sum(p.stat().st_size for p in debug.rglob("*") if p.is_file()) if debug.exists() else 0
    return float(re.search(r"epoch_seconds=([0-9.]+)", log).group(1)), train_seconds, size


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=96, help="training images (6 classes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        per_class = args.images // 6
        data = demo_data.generate(tmp, per_split={"train": per_class, "valid": 2}, corrupt_file=False)
        steps = (per_class * 6) // args.batch_size
        device = (
            torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
        )
        print(
            f"machine: {platform.processor() or platform.machine()}, {device}; torch {torch.__version__}; "
            f"ResNet18 {args.image_size} px, batch {args.batch_size}, {per_class * 6} training images ({steps} steps)\n"
        )
        print("| recording | epoch s | train images/s | debug data | per saved step |")
        print("|---|---|---|---|---|")
        configurations = [
            ("none", []),
            ("profiler", ["--profile", "true"]),
            ("profiler + debug, save_interval 10", ["--profile", "true", "--debug", "true", "--save_interval", "10"]),
            ("profiler + debug, save_interval 1", ["--profile", "true", "--debug", "true", "--save_interval", "1"]),
        ]
        for name, extra in configurations:
            epoch, train_seconds, size = run(
                data, f"{tmp}/{len(name)}-{name[:4]}", args.image_size, args.batch_size, extra
            )
            throughput = f"{per_class * 6 / train_seconds:.1f}" if train_seconds else "–"
            saved = -(-steps // int(extra[-1])) + 1 if "--save_interval" in extra else 0
            per_step = f"{size / saved / 1024:.0f} KB" if saved else "–"
            print(f"| {name} | {epoch:.1f} | {throughput} | {size / 2**20:.1f} MB | {per_step} |")


if __name__ == "__main__":
    main()
