#!/usr/bin/env bash
# The GPU check from a clean checkout (issue 28): the venv as `make` installs it (skipped when it is there), then
# benchmarks/gpu_check.py (one table, under 8 minutes on one H100/H200; --quick: toy sizes, any CPU).
#   bash benchmarks/gpu_check.sh [--quick] | tee gpu-check.md
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory .venv/bin/.installed >&2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 2>/dev/null || echo "nvidia-smi: none here" >&2
exec .venv/bin/python benchmarks/gpu_check.py "$@"
