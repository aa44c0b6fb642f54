"""The local endpoint's latency with and without slow clients holding connections open, side by side.

    .venv/bin/python benchmarks/bench_slow_clients.py [--requests 30] [--slow 3]

Trains a tiny model (3 generated classes, 32 px, one epoch), serves it with the local backend (waitress on
127.0.0.1), and times GET /ping and one raw-image POST /invocations, first on an idle server, then while
`--slow` connections send their headers a byte at a time and one more has sent half a body. Prints a
markdown table; numbers go into BENCHMARKS.md with the machine they came from. Only 127.0.0.1 is used.
"""

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "workflow"), str(REPO / "tests")]

from conftest import TINY_CLASSES
from dogbreed.backends.local import LocalBackend
from dogbreed.data import demo_data
from dogbreed.serving import packaging


def timed(call, repeats) -> list:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = call()
        seconds.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text[:200]
    return seconds


def slow_connections(host, port, count, image) -> list:
    """count connections that never finish their headers, and one whose body never arrives."""
    connections = []
    for _ in range(count):
        connection = socket.create_connection((host, port), timeout=10)
        connection.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        connections.append(connection)
    connection = socket.create_connection((host, port), timeout=10)
    connection.sendall(
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n"
        + image[:10]
    )
    return connections + [connection]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--slow", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-slow-clients-"))
    data = demo_data.generate(
        root / "data", seed=1, classes=TINY_CLASSES, per_split={"train": 8, "valid": 4}, corrupt_file=False
    )
    job = LocalBackend({}).train(
        "bench",
        {"weights": "none", "image_size": 32, "epochs": 1, "batch_size": 8, "num_workers": 0},
        {"train": f"file://{data}/train", "valid": f"file://{data}/valid"},
        root / "jobs",
        REPO / "scripts",
        echo=False,
    )
    packaging.package_for_serving(job["model_uri"][len("file://") :], REPO / "scripts", root / "served.tar.gz")
    backend = LocalBackend({"channel_timeout": 120})  # the slow clients stay for the whole measurement
    endpoint = backend.deploy(root / "served.tar.gz", "bench-slow-clients", root / "state")
    url = endpoint["url"]
    host, port = url.rsplit("/", 1)[1].rsplit(":", 1)
    image = next(data.rglob("*.jpg")).read_bytes()
    ping = lambda: requests.get(url + "/ping", timeout=30)
    invoke = lambda: requests.post(url + "/invocations", data=image, headers={"Content-Type": "image/jpeg"}, timeout=30)
    rows = {}
    try:
        rows["idle"] = (timed(ping, args.requests), timed(invoke, args.requests))
        held = slow_connections(host, int(port), args.slow, image)
        try:
            rows[f"{args.slow} slowloris + 1 slow body open"] = (
                timed(ping, args.requests),
                timed(invoke, args.requests),
            )
        finally:
            for connection in held:
                connection.close()
    finally:
        backend.teardown(root / "state")
    ms = lambda values, q: f"{np.percentile(values, q) * 1000:.1f}"
    print("| server state | /ping p50 / p95 (ms) | one-image /invocations p50 / p95 (ms) | requests each |")
    print("|---|---|---|---|")
    for state, (pings, invocations) in rows.items():
        print(
            f"| {state} | {ms(pings, 50)} / {ms(pings, 95)} | {ms(invocations, 50)} / {ms(invocations, 95)} | {args.requests} |"
        )


if __name__ == "__main__":
    main()
