"""Speed, side by side, on this machine (issue 12): one command, three tables.

    .venv/bin/python benchmarks/bench_speed.py [--only trial,finetune,endpoint] [--image-size 224]

0. workflow: the demo's run (`deploy`, config/demo.yaml) with a frozen backbone at --image-size, feature
   cache on vs off: the tune + train stages (extract_features included) in seconds, and test accuracy.
1. trial: a frozen-backbone tuning trial the seed project's way (images decoded and augmented with PIL
   every epoch, the backbone recomputed) vs ours (the backbone's features extracted once by
   scripts/feature_cache.py, then the head trained on them): seconds and validation accuracy, with
   augmentation off (the same model by construction) and on (fresh augmentations vs cached views).
2. finetune: full fine-tuning images/s, fp32 vs channels_last (and vs AMP on a GPU).
3. endpoint: the local server's images/s and latency p50/p99 for 1, 4 and 16 concurrent single-image
   clients, batching off (max_batch_size 1) and on (16).
Numbers go into BENCHMARKS.md with the machine; nothing here is asserted.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "workflow"), str(REPO / "scripts")]
sys.path.insert(0, str(REPO / "benchmarks"))
# the endpoint's server imports the job contract from scripts/, as the Snakefile's jobs do
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO / "scripts"), os.environ.get("PYTHONPATH")] if p)
from dogbreed.backends.local import LocalBackend, pack_model_dir
from dogbreed.data import demo_data

PYTHON = sys.executable


def machine() -> str:
    device = (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"no GPU, {torch.get_num_threads()} CPU threads"
    )
    return f"{platform.processor() or platform.machine()}, {device}; torch {torch.__version__}"


def train_job(train, valid, out, *flags, batch_size=32):
    """scripts/train.py as a job; (seconds, last valid_accuracy, train images/s from the step timings)."""
    started = time.time()
    command = [
        PYTHON,
        str(REPO / "scripts/train.py"),
        "--train",
        str(train),
        "--valid",
        str(valid),
        "--model_dir",
        f"{out}/model",
        "--output_data_dir",
        f"{out}/output",
        "--checkpoint_dir",
        f"{out}/ckpt",
        "--weights",
        "none",
        "--profile",
        "true",
        "--batch_size",
        str(batch_size),
        *map(str, flags),
    ]
    log = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    seconds = time.time() - started
    accuracy = float(re.findall(r"valid_accuracy=([0-9.]+)", log)[-1])
    steps = [json.loads(line) for line in (Path(out) / "output/profiler/steps.jsonl").read_text().splitlines()]
    train_steps = [s for s in steps if s["phase"] == "train" and s["step"] > 0]  # step 0 warms up
    images = batch_size * len(train_steps)  # drop_last: every training batch is full
    busy = sum(s["end"] - s["start"] for s in train_steps)
    return seconds, accuracy, (images / busy if images and busy else None)


def bench_workflow(tmp, image_size, augment=True):
    import shutil

    import yaml

    print(
        f"\n### 0. The demo's run with a frozen backbone at {image_size} px (3 trials × 2 epochs, 6-epoch training, "
        f"--cores 2, augment {'on' if augment else 'off'}): feature cache on vs off\n"
    )
    print("| feature cache | extract_features s | tune s | train s | tune + train s | test accuracy |")
    print("|---|---|---|---|---|---|")
    rows = {}
    for cache in (False, True):
        work = Path(tmp) / f"workflow-{cache}"
        work.mkdir()
        for name in ("Snakefile", "config.yaml"):
            shutil.copy(REPO / name, work / name)
        for name in ("workflow", "scripts", "config", "profiles"):
            shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        overlay = {
            "model": {"image_size": image_size, "feature_cache": cache},
            "hyperparameters": {"freeze_backbone": True, "augment": augment},
        }
        (work / "config/bench.yaml").write_text(yaml.safe_dump(overlay))
        args = ["--configfile", "config/demo.yaml", "config/bench.yaml"]
        subprocess.run(
            [str(Path(PYTHON).parent / "snakemake"), "--cores", "2", "deploy", *args],
            cwd=work,
            capture_output=True,
            check=True,
        )
        seconds = dict.fromkeys(("extract_features", "tune", "train"))
        # each rule's time: from the end of the rule it waited for to the end of its own log
        ends = {
            rule: (work / f"results/logs/{rule}.log").stat().st_mtime
            for rule in ("upload", "extract_features", "tune", "train")
            if (work / f"results/logs/{rule}.log").exists()
        }
        start = ends["upload"]
        for rule in ("extract_features", "tune", "train"):
            if rule in ends:
                seconds[rule] = ends[rule] - start
                start = ends[rule]
        accuracy = json.loads((work / "results/evaluation/metrics.json").read_text())["accuracy"]
        total = sum(v for v in seconds.values() if v)
        rows[cache] = total
        subprocess.run(
            [str(Path(PYTHON).parent / "snakemake"), "--cores", "1", "teardown", *args], cwd=work, capture_output=True
        )
        cell = lambda v: f"{v:.0f}" if v else "–"
        print(
            f"| {'on' if cache else 'off'} | {cell(seconds['extract_features'])} | {cell(seconds['tune'])} | "
            f"{cell(seconds['train'])} | {total:.0f} | {accuracy:.3f} |"
        )
    print(f"\ntune + train, cache off : on = {rows[False] / rows[True]:.1f}×")


def bench_trial(tmp, image_size, epochs, trials):
    data = demo_data.generate(f"{tmp}/trial-data", per_split={"train": 50, "valid": 30}, corrupt_file=False)
    print(
        f"\n### 1. A frozen-backbone tuning trial: {epochs} epochs, ResNet18 {image_size} px, "
        f"300 train / 180 valid images, batch 32\n"
    )
    print(
        "| augmentation | seed-style trial s | feature extraction s (once) | our trial s | "
        f"{trials} trials, seed-style : ours | valid acc seed-style | valid acc ours |"
    )
    print("|---|---|---|---|---|---|---|")
    common = ["--image_size", image_size, "--epochs", epochs, "--freeze_backbone", "true", "--lr", 0.01]
    for augment in ("false", "true"):
        seed_style, seed_acc, _ = train_job(
            data / "train", data / "valid", f"{tmp}/seed-{augment}", *common, "--augment", augment
        )
        started = time.time()
        subprocess.run(
            [
                PYTHON,
                str(REPO / "scripts/feature_cache.py"),
                "--train",
                str(data / "train"),
                "--valid",
                str(data / "valid"),
                "--model_dir",
                f"{tmp}/features-{augment}",
                "--weights",
                "none",
                "--image_size",
                str(image_size),
                "--augment",
                augment,
                "--feature_views",
                "3",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        extraction = time.time() - started
        ours, our_acc, _ = train_job(
            f"{tmp}/features-{augment}/train",
            f"{tmp}/features-{augment}/valid",
            f"{tmp}/ours-{augment}",
            *common,
            "--augment",
            augment,
        )
        ratio = trials * seed_style / (extraction + trials * ours)
        print(
            f"| {'on (3 cached views)' if augment == 'true' else 'off'} | {seed_style:.1f} | {extraction:.1f} | {ours:.1f} | "
            f"{ratio:.1f}× | {seed_acc:.3f} | {our_acc:.3f} |"
        )


def bench_finetune(tmp, image_size):
    data = demo_data.generate(f"{tmp}/finetune-data", per_split={"train": 16, "valid": 2}, corrupt_file=False)
    print(f"\n### 2. Full fine-tuning, ResNet18 {image_size} px, batch 16, 96 images (one epoch)\n")
    print("| precision / memory format | train images/s |")
    print("|---|---|")
    settings = [
        ("fp32, NCHW", ["--channels_last", "false", "--amp", "false"]),
        ("fp32, channels_last", ["--channels_last", "true", "--amp", "false"]),
    ]
    if torch.cuda.is_available():
        settings.append(("AMP (bf16, or fp16 + scaler), channels_last", ["--channels_last", "true", "--amp", "true"]))
    for name, flags in settings:
        _, _, throughput = train_job(
            data / "train",
            data / "valid",
            f"{tmp}/ft-{len(name)}",
            "--image_size",
            image_size,
            "--epochs",
            1,
            *flags,
            batch_size=16,
        )
        print(f"| {name} | {throughput:.1f} |")


def bench_endpoint(tmp, requests_per_client=40):

    data = demo_data.generate(f"{tmp}/endpoint-data", per_split={"train": 2, "valid": 2}, corrupt_file=False)
    model_dir = Path(tmp) / "endpoint-model"
    subprocess.run(
        [
            PYTHON,
            str(REPO / "scripts/train.py"),
            "--train",
            str(data / "train"),
            "--valid",
            str(data / "valid"),
            "--model_dir",
            str(model_dir),
            "--output_data_dir",
            f"{tmp}/ep-out",
            "--checkpoint_dir",
            f"{tmp}/ep-ck",
            "--weights",
            "none",
            "--epochs",
            "1",
            "--image_size",
            "64",
        ],
        capture_output=True,
        check=True,
    )
    import shutil

    shutil.copytree(REPO / "scripts", model_dir / "code", ignore=shutil.ignore_patterns("__pycache__"))
    pack_model_dir(model_dir, Path(tmp) / "model.tar.gz")
    image = next((data / "valid").glob("*/*.jpg")).read_bytes()
    print("\n### 3. The local endpoint (the demo's 64 px ResNet18), single-image JPEG requests\n")
    print("| clients | batching | images/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for batch_size in (1, 16):
        backend = LocalBackend({"max_batch_size": batch_size, "threads": 16})
        state = Path(tmp) / f"endpoint-{batch_size}"
        endpoint = backend.deploy(Path(tmp) / "model.tar.gz", "bench", state)
        try:
            for clients in (1, 4, 16):
                latencies, seconds = drive_endpoint(
                    endpoint["url"] + "/invocations", image, clients, requests_per_client=requests_per_client
                )
                latencies.sort()
                p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
                print(
                    f"| {clients} | {'off' if batch_size == 1 else f'on (max_batch_size {batch_size})'} | "
                    f"{len(latencies) / seconds:.1f} | {1000 * statistics.median(latencies):.0f} | {1000 * p99:.0f} |"
                )
        finally:
            backend.teardown(state)


def drive_endpoint(url, image: bytes, clients: int, requests_per_client=None, seconds=None) -> tuple:
    """(each request's latency in s, the wall time) of `clients` threads posting the JPEG `image` to `url`, each
    `requests_per_client` times or for `seconds`."""
    import requests

    latencies, lock = [], threading.Lock()
    until = time.perf_counter() + seconds if seconds is not None else None

    def client():
        with requests.Session() as session:
            sent = 0
            while (sent < requests_per_client) if until is None else (time.perf_counter() < until):
                started = time.perf_counter()
                answer = session.post(url, data=image, headers={"Content-Type": "image/jpeg"}, timeout=60)
                answer.raise_for_status()
                sent += 1
                with lock:
                    latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="workflow,trial,finetune,endpoint")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the tuning trial")
    parser.add_argument("--trials", type=int, default=8, help="trials the extraction is shared by, for the ratio")
    parser.add_argument(
        "--augment", default="true", choices=["true", "false"], help="augmentation in the workflow table"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        if "workflow" in args.only:
            bench_workflow(tmp, args.image_size, args.augment == "true")
        if "trial" in args.only:
            bench_trial(tmp, args.image_size, args.epochs, args.trials)
        if "finetune" in args.only:
            bench_finetune(tmp, args.image_size)
        if "endpoint" in args.only:
            bench_endpoint(tmp)


if __name__ == "__main__":
    main()
