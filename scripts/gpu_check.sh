#!/usr/bin/env bash
# The GPU checks as one job (figures: docs/benchmarks.md, "GPU"). On a machine with CUDA GPUs:
#   1. the card(s) and the software;
#   2. the exact COCO 5K matrices (5,000 images x 25,000 captions) of GSMN sparse and SCAN t2i, in
#      8 GiB blocks (goal on one H100/H200: GSMN <= 20 s), GSMN's again with TF32 products;
#   3. one training step at Flickr30K shapes (bench_train_step.py) for VSE++, SCAN t2i and GSMN sparse
#      in fp32 and bf16: steps/s, the extrapolated Flickr30K epoch, and the GPU utilisation sampled
#      by nvidia-smi while only the vectorised steps run (goal >= 70%);
#   4. a real `kgitm fit` of SCAN t2i with the Flickr30K recipe on a Flickr30K-shaped random split
#      (3,000 images, data loader workers, pinned memory), 200 steps, with its GPU utilisation;
#   5. with more than one GPU: DDP evaluation equals one-process evaluation (tests/test_ddp_cli.py
#      on the GPUs).
# Usage (repository root):  scripts/gpu_check.sh OUT_DIR      (PYTHON=... picks the interpreter)
#   SMOKE=1 runs every part on the CPU at toy sizes (to check the script itself without a GPU).
# Writes to OUT_DIR: gpu.txt, coco5k_*.json, train_step_{fp32,bf16}.json + utilisation samples,
# fit_f30k.log + utilisation, ddp.txt, summary.txt.
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR}
py=${PYTHON:-python3}
smoke=${SMOKE:-0}
export PYTHONUNBUFFERED=1
mkdir -p "$out" runs
if [ "$smoke" = 1 ]; then
  dev=cpu; coco=(--images 20 --captions 100 --dim 64); step=(--batch 8 --embed-dim 64 --feature-dim 64 --steps 1)
  fit_steps=3; f30k_images=40; trainer=configs/trainer/cpu.yaml; smi() { :; }
else
  dev=cuda; coco=(--images 5000 --captions 25000); step=(--steps 10 --warmup 2)
  fit_steps=200; f30k_images=3000; trainer=configs/trainer/gpu.yaml
  smi() { nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > "$1" & echo $!; }
fi
util() {  # mean and median of the non-idle samples in a file
  "$py" -c "import sys, statistics as s; v=[float(x) for x in open(sys.argv[1]) if x.strip()]; b=[x for x in v if x>0] or [0]; print(f'GPU utilisation {s.mean(b):.0f}% mean, {s.median(b):.0f}% median over {len(b)} busy samples of {len(v)}')" "$1" 2>/dev/null || echo "no utilisation samples"
}

{ if [ "$smoke" = 1 ]; then echo "SMOKE run on the CPU"; else nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
  "$py" -c "import torch, lightning; print('torch', torch.__version__, '| lightning', lightning.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
} 2>&1 | tee "$out/gpu.txt"

echo "== 2. COCO 5K exact matrices (8 GiB blocks) ==" | tee -a "$out/summary.txt"
# GSMN's matrix is also computed with TF32 products (--compare-precision high): its time, and how far the
# scores and best matches move from float32 (the goal is judged on float32)
"$py" scripts/bench_similarity.py --device "$dev" --methods gsmn_sparse "${coco[@]}" --memory-budget-mb 8192 --loop-captions 0 \
  --compare-precision high --output "$out/coco5k_gsmn_sparse.json" 2>&1 | tail -n 3 | tee -a "$out/summary.txt"
"$py" scripts/bench_similarity.py --device "$dev" --methods scan_t2i "${coco[@]}" --memory-budget-mb 8192 --loop-captions 0 \
  --output "$out/coco5k_scan_t2i.json" 2>&1 | tail -n 2 | tee -a "$out/summary.txt"

echo "== 3. training step at Flickr30K shapes ==" | tee -a "$out/summary.txt"
for prec in fp32 bf16; do
  "$py" scripts/bench_train_step.py --device "$dev" --precision "$prec" "${step[@]}" \
    --output "$out/train_step_$prec.json" 2>&1 | tail -n 5 | tee -a "$out/summary.txt"
  pid=$(smi "$out/util_step_$prec.txt")
  "$py" scripts/bench_train_step.py --device "$dev" --precision "$prec" "${step[@]}" --no-loop --methods scan_t2i,gsmn_sparse \
    > "$out/train_step_${prec}_noloop.txt" 2>&1
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
  echo "$prec, vectorised steps only: $(util "$out/util_step_$prec.txt")" | tee -a "$out/summary.txt"
done

echo "== 4. kgitm fit, SCAN t2i Flickr30K recipe, Flickr30K-shaped data ==" | tee -a "$out/summary.txt"
"$py" -c "
import sys; sys.path.insert(0, 'scripts')
from pathlib import Path
from bench_data_path import make_split
root = Path('runs/gpu_check_f30k')
make_split(root, 'train', $f30k_images, sparse=False)
for s in ('dev', 'test'): make_split(root, s, 20, sparse=False, seed=1)
"
pid=$(smi "$out/util_fit.txt")
t0=$(date +%s)
"$py" -m kgitm fit --config configs/experiment/scan_t2i_f30k.yaml --data.root runs/gpu_check_f30k --trainer "$trainer" \
  --trainer.max_steps "$fit_steps" --trainer.limit_val_batches 0 --trainer.logger false --trainer.enable_checkpointing false \
  --trainer.callbacks null --trainer.enable_progress_bar false --trainer.default_root_dir runs/gpu_check_fit \
  > "$out/fit_f30k.log" 2>&1
rc=$?
[ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
echo "fit exit $rc, $fit_steps steps in $(( $(date +%s) - t0 )) s (with start-up); $(util "$out/util_fit.txt")" | tee -a "$out/summary.txt"

echo "== 5. DDP evaluation equality ==" | tee -a "$out/summary.txt"
gpus=$("$py" -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -gt 1 ]; then
  KGITM_DDP_ACCELERATOR=gpu "$py" -m pytest -q tests/test_ddp_cli.py 2>&1 | tail -n 3 | tee "$out/ddp.txt" | tee -a "$out/summary.txt"
else
  echo "one GPU ($gpus): DDP across GPUs not checked here (tests/test_ddp_cli.py checks 2 CPU processes in CI)" | tee "$out/ddp.txt" | tee -a "$out/summary.txt"
fi
