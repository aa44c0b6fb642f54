"""The demo's wall time per stage on two backends (or with MLflow tracking on and off), side by side.

    .venv/bin/python benchmarks/bench_backends.py [--backends local local_container] [--tracking on off]

Runs `snakemake --cores 1 deploy report --configfile config/demo.yaml` from nothing in a scratch copy
of the workflow for each backend (local_container needs `make container-images` first), reads each
rule's start and finish from Snakemake's log, tears the endpoint down, and prints a markdown table.
Numbers go into BENCHMARKS.md with the machine they came from.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")


def stage_seconds(log: str) -> dict:
    """{rule: seconds} from Snakemake's log: each job's "[timestamp]" line before "rule X:" (start) and
    before "Finished jobid: N (Rule: X)" (end)."""
    started, seconds, stamp = {}, {}, None
    for line in log.splitlines():
        if match := STAMP.match(line.strip()):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif (match := re.match(r"^(?:local)?rule (\w+):$", line.strip())) and stamp:
            started[match.group(1)] = stamp
        elif (match := re.search(r"Finished jobid: \d+ \(Rule: (\w+)\)", line)) and match.group(1) in started:
            seconds[match.group(1)] = (stamp - started[match.group(1)]).total_seconds()
    return seconds


def run_demo(backend: str, tracking: bool) -> tuple:
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for name in ("Snakefile", "config.yaml"):
            shutil.copy(REPO / name, work / name)
        for name in ("workflow", "scripts", "config", "profiles", "envs"):
            shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        (work / "config/bench.yaml").write_text(yaml.safe_dump({"backend": backend, "tracking": {"enabled": tracking}}))
        args = ["--cores", "1", "--configfile", "config/demo.yaml", "config/bench.yaml"]
        started = time.time()
        run = subprocess.run([SNAKEMAKE, "deploy", "report", *args], cwd=work, capture_output=True, text=True)
        total = time.time() - started
        subprocess.run([SNAKEMAKE, "teardown", *args], cwd=work, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"{backend}: the demo failed\n{run.stderr[-3000:]}")
        return stage_seconds(run.stdout + run.stderr), total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", nargs="+", default=["local", "local_container"])
    parser.add_argument("--tracking", nargs="+", choices=["on", "off"], default=["on"])
    args = parser.parse_args()
    columns = [(b, t) for b in args.backends for t in args.tracking]
    results = {f"{b}{', tracking ' + t if len(args.tracking) > 1 else ''}": run_demo(b, t == "on") for b, t in columns}
    rules = [
        r
        for r in (
            "fetch",
            "prepare",
            "upload",
            "tune",
            "train",
            "check_training",
            "profiler_report",
            "package_model",
            "start_endpoint",
            "evaluate",
            "report_figures",
            "report",
        )
        if any(r in stages for stages, _ in results.values())
    ]
    print("| stage | " + " | ".join(f"{c} s" for c in results) + " |")
    print("|---|" + "---|" * len(results))
    for rule in rules:
        print(f"| {rule} | " + " | ".join(f"{stages.get(rule, 0):.0f}" for stages, _ in results.values()) + " |")
    print("| **whole run** | " + " | ".join(f"**{total:.0f}**" for _, total in results.values()) + " |")


if __name__ == "__main__":
    main()
