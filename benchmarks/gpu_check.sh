#!/usr/bin/env bash
# One prepared check for a lent GPU (issues 5 and 20), under 8 minutes, everything under $OUT:
#  part 1 (benchmarks/gpu_check.py): the paper-size stage-2 step (256², full-width AttGAN, ir152/irse50/facenet
#    surrogates with random weights), batch 8 and 16, fp32 and bf16 autocast, peak memory, stage-1/3 steps and
#    the projected GPU-hours of a full reproduction;
#  part 2 (benchmarks/gpu_pipeline_check.py): the real training loop (3 stages) and the evaluation on the GPU,
#    every module checked to be on the GPU, first-epoch losses against a CPU run of the same seed, stage times.
# The GPU image has torch but not pydantic/kornia: run benchmarks/gpu_wheels.sh here first and carry .whl/.
#
#   benchmarks/gpu_check.sh              # on the GPU; results under $OUT (or /tmp/erasablemask_gpu_check)
#   benchmarks/gpu_check.sh --dry-run    # tiny sizes on the CPU: checks that the script works
#
# Python: the repo's .venv if it has torch; else a python3 that has torch (the lent GPU's image has torch
# but no network, so nothing can be installed there), importing the repo as `erasablemask` through a
# symlink on PYTHONPATH; else it creates .venv (python3.11 -m venv + pip install -e .), which needs PyPI.
# Wheels carried in .whl/ (see the device README) are installed to /tmp/site first if present.
# Extra arguments go to benchmarks/gpu_check.py (e.g. --batches 8 --dtypes bf16 --repeats 5).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONUNBUFFERED=1
OUT_DIR="${OUT:-${TMPDIR:-/tmp}/erasablemask_gpu_check}"
mkdir -p "$OUT_DIR"

has_torch() { "$1" -c "import torch" >/dev/null 2>&1; }

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ -x .venv/bin/python ] && has_torch .venv/bin/python; then
  PY=.venv/bin/python
elif command -v python3 >/dev/null && has_torch python3; then
  PY=python3
else
  echo "no Python with torch found: creating .venv (needs PyPI)" >&2
  if [ -f Makefile ] && grep -q '^venv:' Makefile; then
    make venv
  else
    "$(command -v python3.11 || command -v python3)" -m venv .venv
    .venv/bin/python -m pip install -q -e .
  fi
  PY=.venv/bin/python
fi

if ! "$PY" -c "import erasablemask.models" >/dev/null 2>&1; then
  SHIM="$(mktemp -d)"
  ln -s "$ROOT" "$SHIM/erasablemask"  # the repository root is the package (DESIGN.md)
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "python: $PY ($("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())'))"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true
set -o pipefail
DRY=()
for a in "$@"; do [ "$a" = "--dry-run" ] && DRY=(--dry-run); done
# Part 1: paper-size step timings (fp32, bf16) and the projected GPU-hours (about 4 minutes).
"$PY" benchmarks/gpu_check.py --out "$OUT_DIR" --budget-s 200 "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log"
# Part 2: the real pipeline (3 stages by the training loop, then evaluation) on the GPU vs the CPU, same seed.
"$PY" benchmarks/gpu_pipeline_check.py --out "$OUT_DIR" "${DRY[@]}" 2>&1 | tee "$OUT_DIR/gpu_pipeline_check.log"
