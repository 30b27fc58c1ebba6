"""``kgitm compare``: one table from several runs' results (run folders, the JSON files ``kgitm test``
writes, or the ``--output`` of ``kgitm ensemble``), with a ``models`` column: 1 for one model, N for an
average of N models' similarity matrices."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kgitm.eval.report import format_markdown_table, format_retrieval_table


def results_file(path: Path, split: str) -> Path:
    """The results file of ``path``: the file itself, or in a run folder ``results_{split}.json``."""
    if path.is_dir():
        found = path / f"results_{split}.json"
        if not found.exists():
            have = sorted(p.name for p in path.glob("results_*.json"))
            raise SystemExit(f"kgitm compare: {path}: no {found.name} (run `kgitm test` on this run first{'; it has ' + ', '.join(have) if have else ''})")
        return found
    return path


def load_results(path: Path) -> tuple[str, dict, int]:
    """``(name, results, models)`` of one results file: a ``kgitm test`` file (one model) or a
    ``kgitm ensemble --output`` file (its ``ensemble`` metrics, as many models as ``members``); errors
    name the file."""
    try:
        d = json.loads(path.read_text())
        if "ensemble" in d and "members" in d:
            members = list(d["members"])
            name = d.get("name") or f"ensemble({' + '.join(str(m['name']) for m in members)})"
            return str(name), dict(d["ensemble"]), int(d.get("models", len(members)))
        return str(d["name"]), dict(d["results"]), int(d.get("models", 1))
    except FileNotFoundError:
        raise SystemExit(f"kgitm compare: {path}: not found (run `kgitm test` first)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SystemExit(f"kgitm compare: {path}: not a kgitm test_results.json nor a kgitm ensemble --output file ({e})") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="kgitm compare",
        description="Print the retrieval table and diagnostic accuracies of several test runs side by side; the "
        "'models' column is 1 for a single model and N for an ensemble of N (kgitm ensemble --output files).",
    )
    p.add_argument("results", type=Path, nargs="+", help="run folders (their results_<split>.json), results files written by `kgitm test`, "
                   "or `kgitm ensemble --output` files")
    p.add_argument("--split", default="test", help="the split whose results a run folder gives (default test)")
    p.add_argument("--names", nargs="+", default=None, help="row names (default: the names stored in the files)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table instead of fixed-width text")
    a = p.parse_args(argv)
    rows = [load_results(results_file(f, a.split)) for f in a.results]
    if a.names is not None and len(a.names) != len(rows):
        raise SystemExit(f"kgitm compare: --names has {len(a.names)} names for {len(rows)} result files")
    names = [a.names[i] if a.names else name for i, (name, _, _) in enumerate(rows)]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):  # two files of one name keep two rows
        seen[n] = seen.get(n, 0) + 1
        names[i] = n if seen[n] == 1 else f"{n}#{seen[n]}"
    table = {n: res for n, (_, res, _) in zip(names, rows)}
    models = {n: count for n, (_, _, count) in zip(names, rows)}
    print(format_markdown_table(table, models=models) if a.markdown else format_retrieval_table(table, models=models))
    return 0
