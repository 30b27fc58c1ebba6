"""Text-job throughput: the whole preprocessing job (parse, build both graphs, write the store) vs SceneGraphParser.

    python scripts/bench_parser_speed.py [--data DIR] [--n-process 1] [--batch-size 256] [--output speed.json]

Runs ``kgitm preprocess``'s job (:func:`kgitm.graphs.preprocess.run`) on the Flickr8k captions (``DIR/Flickr8k.token.txt``, ``image.jpg#k<TAB>caption``; default ``DIR`` =
``$KGITM_SHARED_DATA/flickr8k`` or ``../shared/data/flickr8k`` beside the repository) and prints
captions/s for both parsers and their ratio. Model loading is not timed. Throughput depends on
what else runs on the machine: report the load with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from kgitm.graphs.text_parser import DEFAULT_SPACY_MODEL, SpacyModelMissingError, TextGraphParser  # noqa: E402


def default_data() -> Path:
    root = os.environ.get("KGITM_SHARED_DATA")
    return Path(root) / "flickr8k" if root else REPO.parent / "shared" / "data" / "flickr8k"


def read_flickr8k(path: Path) -> list[str]:
    caps = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if "\t" in line:
                caps.append(line.split("\t", 1)[1].strip())
    return caps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data(), help="folder with Flickr8k.token.txt")
    ap.add_argument("--spacy-model", default=DEFAULT_SPACY_MODEL)
    ap.add_argument("--n-process", type=int, default=1, help="worker processes for TextGraphParser (2 was slower than 1 on the shared 2-core machine)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N captions")
    ap.add_argument("--sng-limit", type=int, default=None, help="time sng_parser on the first N captions only")
    ap.add_argument("--skip-sng", action="store_true")
    ap.add_argument("--parse-only", action="store_true", help="time parsing + graph building without writing the store")
    ap.add_argument("--output", type=Path, default=None, help="write results JSON here")
    args = ap.parse_args(argv)

    path = args.data / "Flickr8k.token.txt"
    if not path.is_file():
        print(f"Flickr8k captions not found at {path}; pass --data DIR or set KGITM_SHARED_DATA", file=sys.stderr)
        return 2
    caps = read_flickr8k(path)[: args.limit]
    try:
        parser = TextGraphParser(args.spacy_model, batch_size=args.batch_size, n_process=args.n_process)
    except SpacyModelMissingError as e:
        print(e, file=sys.stderr)
        return 2
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.parse_only:
        t = time.perf_counter()
        n_edges = n_tuples = 0
        for p in parser.iter_parse(caps):
            n_edges += len(p.dependency.edges)
            sg = p.scene_graph
            n_tuples += len(sg.objects) + len(sg.attributes) + len(sg.relations)
        dt = time.perf_counter() - t
        what = "parse + both graphs, no store"
        extra = {"dependency_edges": n_edges, "scene_graph_items": n_tuples}
    else:
        import tempfile

        from kgitm.graphs.preprocess import PreprocessConfig, run

        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "flickr8k_caps.txt").write_text("".join(c.replace("\n", " ") + "\n" for c in caps), encoding="utf-8")
            cfg = PreprocessConfig(
                data_root=root, out=root / "graphs", splits=["flickr8k"], spacy_model=args.spacy_model,
                batch_size=args.batch_size, n_process=args.n_process, visual_graphs=False, progress=False,
            )
            t = time.perf_counter()
            summary = run(cfg, parser=parser)[0]
            dt = time.perf_counter() - t
            store_bytes = sum(f.stat().st_size for f in (root / "graphs" / "flickr8k" / "text").iterdir())
        what = "whole text job: parse, both graphs, write the store"
        extra = {"store_bytes": store_bytes, "counts": summary.counts}
    res = {"captions": len(caps), "cpu_count": os.cpu_count(), "load_avg_1min_before": load,
           "kgitm": {"seconds": dt, "captions_per_s": len(caps) / dt, "n_process": args.n_process,
                     "batch_size": args.batch_size, "measured": what, **extra}}
    print(f"kgitm ({what}): {len(caps)} captions in {dt:.1f} s = {len(caps) / dt:.0f} captions/s "
          f"(n_process={args.n_process}, batch_size={args.batch_size})")
    if not args.skip_sng:
        from sng_baseline import load_sng

        sng = load_sng(args.spacy_model)
        sub = caps[: args.sng_limit]
        t = time.perf_counter()
        for c in sub:
            sng.parse(c)
        dt = time.perf_counter() - t
        res["sng_parser"] = {"captions": len(sub), "seconds": dt, "captions_per_s": len(sub) / dt}
        res["speedup"] = res["kgitm"]["captions_per_s"] / res["sng_parser"]["captions_per_s"]
        print(f"sng_parser:            {len(sub)} captions in {dt:.1f} s = {len(sub) / dt:.0f} captions/s")
        print(f"speed-up: {res['speedup']:.1f}x")
    res["load_avg_1min_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"1-min load average before/after: {load:.2f}/{res['load_avg_1min_after']:.2f} on {os.cpu_count()} CPUs")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
