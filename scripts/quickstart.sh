#!/usr/bin/env bash
# The quickstart job: train VSE++ on SynthScenes, then test it (retrieval table + diagnostics).
# Usage: scripts/quickstart.sh [DATA_DIR]   (called by `make quickstart`; outputs in runs/quickstart)
set -euo pipefail
data=${1:-data/synthscenes}
kgitm=${KGITM:-.venv/bin/kgitm}
rm -rf runs/quickstart   # a rerun trains from scratch instead of appending to an older quickstart
"$kgitm" fit --config configs/experiment/quickstart.yaml --config configs/size/cpu_small.yaml --data.root "$data"
"$kgitm" test --config configs/experiment/quickstart.yaml --config configs/size/cpu_small.yaml --data.root "$data" \
  --ckpt_path runs/quickstart/checkpoints/best.ckpt --trainer.logger false   # keep the training logs intact
