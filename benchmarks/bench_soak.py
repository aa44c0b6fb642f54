"""A soak of the local endpoint: several clients for minutes, per window its throughput, latency and the server's
resident memory, so a leak or a slowdown over time shows.

    .venv/bin/python benchmarks/bench_soak.py [--clients 8] [--seconds 180] [--window 30] [--image-size 64]

Trains a tiny model (3 generated classes, one epoch), serves it with the local backend (waitress on 127.0.0.1),
then each client posts one raw image after another. Prints a markdown table (one row a window); numbers go into
BENCHMARKS.md with the machine they came from. Only 127.0.0.1 is used, and the endpoint is always stopped.
"""

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "workflow"), str(REPO / "scripts"), str(REPO / "tests")]

from conftest import TINY_CLASSES
from dogbreed.backends.base import read_endpoint_state
from dogbreed.backends.local import LocalBackend
from dogbreed.data import demo_data
from dogbreed.serving import packaging


def serve_a_tiny_model(root: Path, image_size: int):
    """(backend, endpoint, an image to send) for a freshly trained tiny model."""
    data = demo_data.generate(
        root / "data", seed=1, classes=TINY_CLASSES, per_split={"train": 8, "valid": 4}, corrupt_file=False
    )
    job = LocalBackend({}).train(
        "soak",
        {"weights": "none", "image_size": image_size, "epochs": 1, "batch_size": 8, "num_workers": 0},
        {"train": f"file://{data}/train", "valid": f"file://{data}/valid"},
        root / "jobs",
        REPO / "scripts",
        echo=False,
    )
    packaging.package_for_serving(job["model_uri"][len("file://") :], REPO / "scripts", root / "served.tar.gz")
    backend = LocalBackend({})
    endpoint = backend.deploy(root / "served.tar.gz", "bench-soak", root / "state")
    return backend, endpoint, next(data.rglob("*.jpg")).read_bytes()


def soak(url, image, clients, seconds) -> list:
    """[(finished at, seconds, ok)] of every request the clients made until the time was up."""
    results, lock, end = [], threading.Lock(), time.monotonic() + seconds

    def client():
        session = requests.Session()
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                ok = session.post(
                    url + "/invocations", data=image, headers={"Content-Type": "image/jpeg"}, timeout=60
                ).ok
            except requests.RequestException:
                ok = False
            with lock:
                results.append((time.monotonic(), time.monotonic() - started, ok))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def sample_memory(process, samples, stop):
    while not stop.wait(1.0):
        samples.append((time.monotonic(), process.memory_info().rss))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--window", type=float, default=30)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    backend, endpoint, image = serve_a_tiny_model(root, args.image_size)
    try:
        server = psutil.Process(read_endpoint_state(root / "state")["pid"])
        memory, stop = [], threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(server, memory, stop), daemon=True)
        started = time.monotonic()
        sampler.start()
        results = soak(endpoint["url"], image, args.clients, args.seconds)
        stop.set()
    finally:
        backend.teardown(root / "state")
    print(f"{args.clients} clients, {args.seconds:g} s, {args.image_size} px images, windows of {args.window:g} s\n")
    print("| window (s) | requests | requests/s | p50 ms | p99 ms | errors | server RSS MiB (end of window) |")
    print("|---|---|---|---|---|---|---|")
    for start in np.arange(0, args.seconds, args.window):
        lo, hi = started + start, started + min(start + args.window, args.seconds)
        part = [(s, ok) for at, s, ok in results if lo <= at < hi]
        latencies = np.array([s for s, _ in part]) * 1000 if part else np.array([np.nan])
        rss = [r for at, r in memory if at < hi]
        print(
            f"| {start:g}–{min(start + args.window, args.seconds):g} | {len(part)} | {len(part) / (hi - lo):.1f} | "
            f"{np.percentile(latencies, 50):.0f} | {np.percentile(latencies, 99):.0f} | "
            f"{sum(not ok for _, ok in part)} | {rss[-1] / 2**20:.0f} |"
            if rss
            else f"| {start:g} | {len(part)} | – | – | – | – | – |"
        )


if __name__ == "__main__":
    main()
