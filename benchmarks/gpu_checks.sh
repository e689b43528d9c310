#!/usr/bin/env bash
# GPU checks of LoRA points trained together (issue 24), in well under 8 minutes on one H100/H200:
#   1. the exactness tests on CUDA (train.device auto picks the GPU; fp32: together = alone within 1e-5),
#      the precision flag, the multi-adapter layers;
#   2. the benchmark with --device cuda (bf16 autocast: train.precision auto) and in fp32: the LoRA-only
#      sweep one by one vs together, the scaling table (1..16 points, loop vs bmm) with peak memory, a profile.
# Usage: benchmarks/gpu_checks.sh [OUT_DIR]   (run from the repository root; writes OUT_DIR/*.json, *.log)
set -euo pipefail
OUT="${1:-${OUT:-gpu_checks_out}}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
export MEDLORA_SHARED_DATA="${MEDLORA_SHARED_DATA:-$(cd .. && pwd)/shared/data}"

echo "== 1. exactness and layers on CUDA (fp32)"
timeout 240 "$PY" -m pytest -x -q tests/train/test_together.py tests/models/test_multi_lora.py \
  tests/test_precision.py 2>&1 | tail -5 | tee "$OUT/tests.log"

echo "== 2. benchmark, bf16 autocast (train.precision auto on CUDA)"
timeout 150 "$PY" -m benchmarks.together --device cuda --no-naive --only scaling profile --steps 5 \
  --json "$OUT/cuda_bf16.json" 2>&1 | grep -v -E "^(USDT|ERROR:|\[W)" | tail -30 | tee "$OUT/cuda_bf16.log"

echo "== 3. benchmark, fp32, with the LoRA sweep one by one vs together"
timeout 150 "$PY" -m benchmarks.together --device cuda --precision fp32 --no-naive --small --steps 5 \
  --json "$OUT/cuda_fp32.json" 2>&1 | grep -v -E "^(USDT|ERROR:|\[W)" | tail -40 | tee "$OUT/cuda_fp32.log"
