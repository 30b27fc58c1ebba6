#!/usr/bin/env bash
# The quickstart job (called by `make quickstart` after the data set is generated):
#   1. graph preprocessing: caption dependency graphs and scene graphs, visual scene graphs (graph stores)
#   2. a concept graph from the training captions (knowledge)
#   3. the VSE++ baseline and SGM with WordNet knowledge, each trained and tested on SynthScenes; SGM reads
#      the simulated detector's scene graphs (sgdet preset: detected boxes, VG150 labels, no oracle)
#   4. one table: retrieval (R@K, medr, meanr, RSUM) and the diagnostic accuracies side by side
# Usage: scripts/quickstart.sh [DATA_DIR]      outputs: graphs/, runs/quickstart/{vsepp,sgm_wordnet}/
set -euo pipefail
data=${1:-data/synthscenes}
kgitm=${KGITM:-.venv/bin/kgitm}
# the same budget for both models: 256-d joint space, batch 32, 2 epochs (936 optimiser steps); the grids'
# cells (configs/grid/*.yaml) train the same settings for 4 epochs
size=(--config configs/size/cpu_small.yaml --data.batch_size 32 --trainer.max_epochs 2)
"$kgitm" preprocess --config configs/preprocess/synthscenes.yaml --data-root "$data" --progress false
"$kgitm" build-concepts "$data/train_caps.txt" --name synthscenes --objects 80 --properties 25 --motions 15 --no-progress
rm -rf runs/quickstart   # a rerun trains from scratch instead of appending to an older quickstart
run() {  # run NAME CONFIG EXTRA...: fit, then test the best checkpoint (the test step keeps the training logs)
  local name=$1 cfg=$2; shift 2
  "$kgitm" fit --config "$cfg" "${size[@]}" --data.root "$data" "$@" --run_dir "runs/quickstart/$name"
  "$kgitm" test --config "$cfg" "${size[@]}" --data.root "$data" "$@" --results_name "$name" \
    --ckpt_path "runs/quickstart/$name/checkpoints/best.ckpt"   # results_test.json in the run folder
}
run vsepp configs/experiment/quickstart_vsepp.yaml
run sgm_wordnet configs/experiment/quickstart_sgm_wordnet.yaml \
  --model.knowledge configs/knowledge/wordnet.yaml --data.scene_graph_source sgdet
echo
echo "== SynthScenes test: VSE++ baseline vs SGM + WordNet knowledge on predicted (sgdet) scene graphs =="
"$kgitm" compare runs/quickstart/vsepp runs/quickstart/sgm_wordnet \
  --names "VSE++" "SGM+WordNet (sgdet graphs)"
