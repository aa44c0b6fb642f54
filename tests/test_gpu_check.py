"""benchmarks/gpu_check.py --quick: every row of the GPU check at toy sizes on the CPU, so that the full check
cannot fail for a silly reason on the day a GPU machine runs it (make test-long)."""

import re
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check

pytestmark = pytest.mark.long


def test_the_quick_check_prints_every_row_with_a_number():
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    header = re.search(r"^gpu check \(quick\) on (.+): (\d+) s$", done.stdout, re.MULTILINE)
    assert header and ("GPU" in header.group(1)), done.stdout  # the device is named: "1 GPU(s): NVIDIA …" or "no GPU"
    rows = {}
    for line in done.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("item", "---"):
            rows[(cells[0], cells[1])] = cells[2:]
    assert list(rows) == list(gpu_check.ROWS), done.stdout
    for key, (result, unit, _) in rows.items():
        assert re.fullmatch(r"\d+\.\d", result) and float(result) > 0, (key, result, done.stdout)
        assert unit in ("images/s", "s"), (key, unit)
    bound = rows[("input pipeline", "the fastest setting's compute alone")][2]
    assert "loader-bound" in bound or "compute-bound" in bound, bound
    ddp = rows[("DDP", "one process per GPU")][2]
    assert "2 CPU processes" in ddp or "GPUs" in ddp, ddp
