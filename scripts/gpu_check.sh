#!/usr/bin/env bash
# The GPU checks as one job, for a machine with one CUDA GPU (figures: docs/benchmarks.md, "GPU").
#   1. the card and the software;
#   2. the exact 1,000 x 5,000 similarity matrices of SCAN t2i / i2t and GSMN sparse / dense on the
#      GPU (goal: the whole GSMN matrix in under 60 s on one H100), against the per-caption loop of the
#      public code on the same card (first 1,000 captions); all four again with 8 GiB blocks;
#   3. configs/grid/gpu_synthscenes.yaml through the Lightning CLI on the GPU, the three seeds side by
#      side on the one card, then its summary.
# Usage (repository root):  scripts/gpu_check.sh OUT_DIR     (PYTHON=... picks the interpreter)
# Needs data/synthscenes and graphs/synthscenes (kgitm synthscenes; kgitm preprocess). Everything it
# writes goes to OUT_DIR: gpu.txt, similarity_gpu.json, similarity_gpu_8g.json, gpu_grid.tgz (logs,
# results and summaries of the grid, no checkpoints).
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR}
py=${PYTHON:-python3}
grid_limit=${GRID_LIMIT_S:-600}  # wall-clock limit of the grid part (a lease is short; the swap cell trains for up to 3 min)
export PYTHONUNBUFFERED=1
mkdir -p "$out" runs

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$py" -c "import torch, lightning; print('torch', torch.__version__, '| lightning', lightning.__version__, '|', torch.cuda.get_device_name())"
} 2>&1 | tee "$out/gpu.txt"

echo "== similarity (1,000 x 5,000) =="
"$py" scripts/bench_similarity.py --device cuda --loop-captions 1000 --output "$out/similarity_gpu.json"
"$py" scripts/bench_similarity.py --device cuda --memory-budget-mb 8192 --loop-captions 0 \
  --output "$out/similarity_gpu_8g.json"

echo "== grid: configs/grid/gpu_synthscenes.yaml (seeds in parallel, limit ${grid_limit} s) =="
for seed in 0 1 2; do
  timeout "$grid_limit" "$py" -m kgitm grid configs/grid/gpu_synthscenes.yaml --seeds "$seed" \
    > "runs/gpu_grid_seed$seed.log" 2>&1 &
done
wait
"$py" -m kgitm grid configs/grid/gpu_synthscenes.yaml --summarize-only
tail -n 5 runs/gpu_grid_seed*.log
tar czf "$out/gpu_grid.tgz" --exclude='*.ckpt' --exclude='events.out.tfevents*' \
  runs/grid/gpu_synthscenes runs/gpu_grid_seed*.log
