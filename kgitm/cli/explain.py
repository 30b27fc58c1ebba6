"""``kgitm explain``: one image-caption pair of a trained run, as a picture and a JSON file.

    kgitm explain RUN --image 3 --caption 17 [--split test] [--image-dir DIR] [--out PATH.png]
    kgitm explain RUN --image 3 --text "a dog under a table"

Writes ``PATH.png`` (:func:`kgitm.viz.explain.draw_explanation`) and ``PATH.json``
(:func:`kgitm.models.explain.explain_pair`: the matcher's own alignments, the score and the pair's
ranks); default ``RUN/explain/<split>_image<I>_caption<J>.png`` (``..._text.png`` for a free text).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kgitm explain", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="run folder (logs/config.yaml, checkpoints/best.ckpt, vocab.txt)")
    p.add_argument("--split", default="test", help="split of the image and caption (default test)")
    p.add_argument("--image", type=int, required=True, help="the image's row in the split")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--caption", type=int, help="the caption's line in the split's caption file (default: the image's first)")
    what.add_argument("--text", help="a free caption instead")
    p.add_argument("--image-dir", type=Path, help="folder of the image files, named by the split's ids (default: draw on a canvas)")
    p.add_argument("--out", type=Path, help="the PNG to write (the JSON goes beside it)")
    p.add_argument("--data-root", help="the data folder, if it moved since training (data.root)")
    p.add_argument("--graph-store", help="the graph stores, if they moved since training (data.graph_store)")
    return p


def saved_sims(run: Path, split: str) -> Optional[np.ndarray]:
    """The run's similarity matrix of ``split`` (``sims_<split>.npy``, memory-mapped), or ``None``."""
    path = run / f"sims_{split}.npy"
    return np.load(path, mmap_mode="r") if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from kgitm.core.io import DataFormatError, atomic_write_json
    from kgitm.models.explain import explain_pair
    from kgitm.models.run import RunFolderError, load_run_model
    from kgitm.viz.explain import draw_explanation

    start = time.perf_counter()
    try:  # without Lightning: its import alone would take most of the time
        model, data = load_run_model(args.run, data_root=args.data_root, graph_store=args.graph_store)
    except (RunFolderError, DataFormatError) as err:
        print(f"kgitm explain: error: {err}", file=sys.stderr)
        return 2
    caption = args.caption
    if caption is None and args.text is None:
        caption = data.open_split(args.split).captions_per_image * args.image
    try:
        expl = explain_pair(model, data, split=args.split, image=args.image, caption=caption, text=args.text,
                            sims=saved_sims(args.run, args.split), image_dir=args.image_dir)
    except (ValueError, DataFormatError) as err:
        print(f"kgitm explain: error: {err}", file=sys.stderr)
        return 2
    name = f"{args.split}_image{args.image}_" + (f"caption{caption}" if args.text is None else "text")
    out = args.out or args.run / "explain" / f"{name}.png"
    expl["run"] = str(args.run)
    draw_explanation(expl, out)
    atomic_write_json(out.with_suffix(".json"), expl)
    r = expl["ranks"]
    print(f"score {expl['score']:.4f}; image rank {r['image_among_images']}/{r['num_images']}, caption rank "
          f"{r['caption_among_captions']}/{r['num_captions']} ({r['source']})")
    print(f"wrote {out} and {out.with_suffix('.json')} in {time.perf_counter() - start:.1f} s")
    return 0
