"""``kgitm compare``: one table from several runs' results (run folders, or the JSON files ``kgitm test``
writes)."""

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


def load_results(path: Path) -> tuple[str, dict]:
    """``(name, results)`` of one results file; errors name the file."""
    try:
        d = json.loads(path.read_text())
        return str(d["name"]), dict(d["results"])
    except FileNotFoundError:
        raise SystemExit(f"kgitm compare: {path}: not found (run `kgitm test` first)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SystemExit(f"kgitm compare: {path}: not a kgitm test_results.json ({e})") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="kgitm compare",
        description="Print the retrieval table and diagnostic accuracies of several test runs side by side.",
    )
    p.add_argument("results", type=Path, nargs="+", help="run folders (their results_<split>.json) or results files written by `kgitm test`")
    p.add_argument("--split", default="test", help="the split whose results a run folder gives (default test)")
    p.add_argument("--names", nargs="+", default=None, help="row names (default: the names stored in the files)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table instead of fixed-width text")
    a = p.parse_args(argv)
    rows = [load_results(results_file(f, a.split)) for f in a.results]
    if a.names is not None and len(a.names) != len(rows):
        raise SystemExit(f"kgitm compare: --names has {len(a.names)} names for {len(rows)} result files")
    table = {(a.names[i] if a.names else name): res for i, (name, res) in enumerate(rows)}
    print(format_markdown_table(table) if a.markdown else format_retrieval_table(table))
    return 0
