"""Benchmark: the training data path at real data-set shapes.

1. **Loader throughput** (captions/s) at Flickr30K shapes, 36 regions x 2048-d float32 features and
   five captions of 8-16 words per image, batch 128, with 0, 1 and 2 worker processes
   (``--data.num_workers``). The split holds ``--f30k-images`` images of random features (default
   3,000: the per-caption cost does not depend on the split's length, and the file stays in the page
   cache as a real one does after the first epoch).
2. **Opening a COCO-shaped split** (113,287 images x 36 x 2048 float32 = 33.4 GB, 566,435 captions)
   and running the first training steps of VSE++ through Lightning, in a fresh process: wall time of
   each stage and the process's peak resident memory. The feature file is *sparse* (written with
   ``np.lib.format.open_memmap``, which allocates no blocks), so the one-time finiteness scan reads
   zeros at memory speed; on a real disk the first scan of 33 GB takes about ``33.4 GB / disk speed``
   (then it is recorded and skipped, :func:`kgitm.data.precomp.scan_finite`). Peak RSS counts the
   file pages the process touched through its memory map.

Examples::

    python scripts/bench_data_path.py --output docs/results/data_path.json
    python scripts/bench_data_path.py --skip-coco --f30k-images 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REGIONS, FEATURE_DIM, K = 36, 2048, 5
COCO_TRAIN_IMAGES, COCO_TRAIN_CAPTIONS = 113_287, 566_435
WORDS = ("a man woman dog cat child boy girl red blue green white black small large young old two three "
         "is are on in at with near under behind of the riding holding wearing sitting standing walking "
         "street table grass field water beach road park bench ball shirt hat car bike tree building").split()


def write_captions(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 17, size=n)
    words = np.array(WORDS)
    with open(path, "w") as f:
        for length in lengths:
            f.write(" ".join(words[rng.integers(0, len(words), size=length)]) + "\n")


def make_split(root: Path, split: str, n_images: int, *, sparse: bool, seed: int = 0) -> None:
    """A split of ``n_images`` in the precomputed layout (random or sparse-zero features)."""
    root.mkdir(parents=True, exist_ok=True)
    ims = root / f"{split}_ims.npy"
    if not ims.exists():
        feats = np.lib.format.open_memmap(ims.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n_images, REGIONS, FEATURE_DIM))
        if not sparse:
            rng = np.random.default_rng(seed)
            for s in range(0, n_images, 256):
                feats[s : s + 256] = rng.standard_normal((min(256, n_images - s), REGIONS, FEATURE_DIM), dtype=np.float32)
        feats.flush()
        del feats
        os.replace(ims.with_suffix(".tmp.npy"), ims)
    caps = root / f"{split}_caps.txt"
    if not caps.exists():
        write_captions(caps.with_suffix(".tmp"), n_images * K, seed)
        os.replace(caps.with_suffix(".tmp"), caps)


def loader_throughput(root: Path, workers: int, *, batches: int, batch_size: int) -> dict:
    from kgitm.lit.datamodule import PrecompDataModule

    dm = PrecompDataModule(str(root), batch_size=batch_size, num_workers=workers, pin_memory=False, diagnostics=False)
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # workers started, first batch out
    t0 = time.perf_counter()
    seen = 0
    for _ in range(batches):
        seen += len(next(it).caption_index)
    dt = time.perf_counter() - t0
    return {"workers": workers, "batches": batches, "captions": seen, "seconds": round(dt, 3), "captions_per_s": round(seen / dt, 1)}


def coco_child(root: Path, steps: int) -> dict:
    """Runs in a fresh process: open, validate, build the vocabulary, train ``steps`` steps."""
    import lightning as L

    from kgitm.encoders.image import RegionEncoder
    from kgitm.encoders.text import BiGRUTextEncoder
    from kgitm.lit.datamodule import PrecompDataModule
    from kgitm.lit.module import MatchingModule
    from kgitm.matchers.global_embedding import GlobalEmbeddingMatcher

    out: dict = {}
    t0 = time.perf_counter()
    dm = PrecompDataModule(str(root), batch_size=128, num_workers=0, diagnostics=False)  # opens + scans train, builds the vocabulary
    out["open_validate_vocab_s"] = round(time.perf_counter() - t0, 2)
    out["vocabulary"] = dm.vocab_size
    t1 = time.perf_counter()
    model = MatchingModule(RegionEncoder(feature_dim=FEATURE_DIM, embed_dim=1024),
                           BiGRUTextEncoder(vocab_size=dm.vocab_size, embed_dim=1024, word_dim=300), GlobalEmbeddingMatcher())
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    out["first_steps_s"] = round(time.perf_counter() - t1, 2)
    out["steps"] = steps
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/bench_data_path"), help="where the data sets are written (kept for reruns)")
    p.add_argument("--f30k-images", type=int, default=3000)
    p.add_argument("--batches", type=int, default=40, help="batches timed per worker count")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--coco-steps", type=int, default=20)
    p.add_argument("--skip-coco", action="store_true")
    p.add_argument("--coco-child", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--output", type=Path, default=None)
    a = p.parse_args()
    if a.coco_child is not None:
        print(json.dumps(coco_child(a.coco_child, a.coco_steps)))
        return

    os.environ.setdefault("KGITM_CACHE_DIR", str(a.work / "cache"))
    result: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}}
    f30k = a.work / "f30k_shaped"
    make_split(f30k, "train", a.f30k_images, sparse=False)
    result["loader"] = []
    for w in a.workers:
        r = loader_throughput(f30k, w, batches=a.batches, batch_size=a.batch_size)
        print(f"loader, {w} workers: {r['captions_per_s']:.0f} captions/s ({r['batches']} batches of {a.batch_size})", flush=True)
        result["loader"].append(r)
    if not a.skip_coco:
        coco = a.work / "coco_shaped"
        t0 = time.perf_counter()
        make_split(coco, "train", COCO_TRAIN_IMAGES, sparse=True)
        result["coco_write_s"] = round(time.perf_counter() - t0, 1)
        env = {**os.environ, "KGITM_CACHE_DIR": str(a.work / f"cache_cold_{time.time_ns()}")}  # a cold scan
        proc = subprocess.run([sys.executable, __file__, "--coco-child", str(coco), "--coco-steps", str(a.coco_steps)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"COCO-shaped run failed:\n{proc.stderr[-3000:]}")
        result["coco"] = json.loads(proc.stdout.strip().splitlines()[-1])
        result["coco"].update(images=COCO_TRAIN_IMAGES, captions=COCO_TRAIN_CAPTIONS, feature_gb=round(COCO_TRAIN_IMAGES * REGIONS * FEATURE_DIM * 4 / 1e9, 1))
        print(f"COCO-shaped train split: open + scan + vocabulary {result['coco']['open_validate_vocab_s']} s, "
              f"{a.coco_steps} VSE++ steps {result['coco']['first_steps_s']} s, peak RSS {result['coco']['peak_rss_gb']} GB", flush=True)
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
