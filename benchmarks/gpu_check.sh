#!/usr/bin/env bash
# GPU check of the learning core: every registered method trains a few hundred steps with AMP,
# DDP over all visible GPUs, predict throughput against a bare forward loop (<= 8 minutes on one
# GPU). On a machine without CUDA it says so and exits 0. Output also goes to $OUT/gpu_check.log
# when OUT is set (e.g. by the device tool), else to benchmarks/out/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
log_dir=${OUT:-benchmarks/out}
mkdir -p "$log_dir"
PYTHONUNBUFFERED=1 timeout 480 "$PY" benchmarks/gpu_check.py "$@" 2>&1 | tee "$log_dir/gpu_check.log"
exit "${PIPESTATUS[0]}"
