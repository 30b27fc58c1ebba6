"""Score the project's caption parser and SceneGraphParser on FACTUAL dev with SPICE-style tuple F1.

    python scripts/bench_parser_factual.py [--data DIR] [--split dev] [--output results.json]

Reads ``DIR/{split}.csv`` (default ``DIR`` = ``$KGITM_SHARED_DATA/factual`` or ``../shared/data/factual``
beside the repository). Prints overall / object / attribute / relation P, R, F1 for both parsers and
writes them as JSON to ``--output``.
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

from kgitm.graphs.factual import read_factual_csv  # noqa: E402
from kgitm.graphs.spice import spice_score  # noqa: E402
from kgitm.graphs.text_parser import DEFAULT_SPACY_MODEL, SpacyModelMissingError, TextGraphParser  # noqa: E402


def default_data() -> Path:
    root = os.environ.get("KGITM_SHARED_DATA")
    return Path(root) / "factual" if root else REPO.parent / "shared" / "data" / "factual"


def table(results: dict) -> str:
    cols = ["overall", "object", "attribute", "relation"]
    lines = [f"{'parser':<16}" + "".join(f"{c + ' P/R/F1':>24}" for c in cols) + f"{'macro F1':>10}"]
    for name, r in results.items():
        cells = []
        for c in cols:
            s = r["overall"] if c == "overall" else r["per_type"][c]
            cells.append(f"{100 * s['precision']:6.1f} {100 * s['recall']:6.1f} {100 * s['f1']:6.1f}".rjust(24))
        lines.append(f"{name:<16}" + "".join(cells) + f"{100 * r['macro_f1']:10.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data(), help="folder with FACTUAL csv files")
    ap.add_argument("--split", default="dev", choices=["dev", "train"], help="which split to score")
    ap.add_argument("--output", type=Path, default=None, help="write results JSON here")
    ap.add_argument("--spacy-model", default=DEFAULT_SPACY_MODEL)
    ap.add_argument("--limit", type=int, default=None, help="score only the first N rows")
    ap.add_argument("--skip-sng", action="store_true", help="score only the project's parser")
    args = ap.parse_args(argv)

    path = args.data / f"{args.split}.csv"
    if not path.is_file():
        print(f"FACTUAL {args.split} split not found at {path}; pass --data DIR or set KGITM_SHARED_DATA", file=sys.stderr)
        return 2
    rows = read_factual_csv(path)[: args.limit]
    caps = [c for c, _ in rows]
    refs = [t for _, t in rows]
    try:
        parser = TextGraphParser(args.spacy_model)
    except SpacyModelMissingError as e:
        print(e, file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    t = time.perf_counter()
    ours = [p.scene_graph for p in parser.parse(caps)]
    dt = time.perf_counter() - t
    results["kgitm"] = spice_score(ours, refs).to_json() | {"seconds": dt}
    if not args.skip_sng:
        from sng_baseline import load_sng, sng_tuples

        sng = load_sng(args.spacy_model)
        t = time.perf_counter()
        theirs = [sng_tuples(sng.parse(c)) for c in caps]
        dt = time.perf_counter() - t
        results["sng_parser"] = spice_score(theirs, refs).to_json() | {"seconds": dt}
    print(f"FACTUAL {args.split}: {len(rows)} captions, SPICE-style tuple P/R/F1 (micro; WordNet synonyms)")
    print(table(results))
    if "sng_parser" in results:
        d = 100 * (results["kgitm"]["overall"]["f1"] - results["sng_parser"]["overall"]["f1"])
        print(f"kgitm - sng_parser overall F1: {d:+.1f} points")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        payload = {"split": args.split, "data": str(path), "captions": len(rows), "spacy_model": args.spacy_model,
                   "metric": "SPICE-style tuple F1, micro over tuples, WordNet synonym matches", "results": results}
        args.output.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
