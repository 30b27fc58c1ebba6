"""Human-readable retrieval tables (fixed-width text and Markdown).

Each table has one row per named result dict (as returned by
:func:`kgitm.eval.metrics.evaluate_retrieval`) with the columns::

    i2t R@1 R@5 R@10 medr meanr | t2i R@1 R@5 R@10 medr meanr | RSUM | extra...

with, when the caller says how many models made each row (``models``), a ``models`` column after the
name: 1 for a single model, N for the average of N models' similarity matrices (``kgitm ensemble``),
where the extra columns are every other numeric key present in any of the dicts (for example
``relation_swap_acc``, ``attribute_swap_acc``, ``synonym_shift_r1``), in alphabetical order; a result
that lacks one shows ``-``. Non-numeric values (such as the ``"folds"`` list of ``coco1k``) are not
tabulated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kgitm.eval.metrics import METRIC_KEYS

_DIRECTION_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("i2t", ("r1", "r5", "r10", "medr", "meanr")),
    ("t2i", ("r1", "r5", "r10", "medr", "meanr")),
)
_SUBHEADER = {"r1": "R@1", "r5": "R@5", "r10": "R@10", "medr": "medr", "meanr": "meanr"}
_NAME_HEADER = "model"
_MODELS_HEADER = "models"
_MISSING = "-"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _extra_keys(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Numeric keys outside the standard metrics, in a stable (alphabetical) order."""
    standard = set(METRIC_KEYS)
    keys = {
        key
        for res in results.values()
        for key, value in res.items()
        if key not in standard and _is_number(value)
    }
    return sorted(keys)


def _fmt(value: Any) -> str:
    return f"{float(value):.1f}" if _is_number(value) else _MISSING


def _rows(results: Mapping[str, Mapping[str, Any]], extras: list[str]) -> list[list[str]]:
    rows = []
    for name, res in results.items():
        row = [str(name)]
        for direction, subs in _DIRECTION_KEYS:
            row += [_fmt(res.get(f"{direction}_{s}")) for s in subs]
        row.append(_fmt(res.get("rsum")))
        row += [_fmt(res.get(key)) for key in extras]
        rows.append(row)
    return rows


def _model_count(models: Mapping[str, int] | None, name: str) -> str:
    if models is None or name not in models:
        return _MISSING
    return str(int(models[name]))


def format_retrieval_table(
    results: Mapping[str, Mapping[str, Any]], title: str | None = None, *, models: Mapping[str, int] | None = None
) -> str:
    """Fixed-width text table of retrieval results, one row per named result.

    Args:
        results: ``{name: metrics}``, e.g. ``{"vsepp": {...}, "gsmn": {...}}``, each with the
            :data:`~kgitm.eval.metrics.METRIC_KEYS` (missing ones print ``-``) and optionally
            extra numeric diagnostics.
        title: optional first line.
        models: ``{name: number of models}`` (1: one model; N: an ensemble of N); when given, a
            ``models`` column follows the name (``-`` for a name it lacks). Default: no such column.

    Returns:
        The table as one string (no trailing newline); numbers with one decimal.
    """
    extras = _extra_keys(results)
    rows = _rows(results, extras)
    name_header = _NAME_HEADER
    if models is not None:  # the count rides in the name cell, right-aligned under its header
        names = [r[0] for r in rows]
        name_w0 = max([len(_NAME_HEADER), *(len(n) for n in names)])
        count_w = len(_MODELS_HEADER)
        for r, name in zip(rows, results):
            r[0] = r[0].ljust(name_w0) + " " + _model_count(models, name).rjust(count_w)
        name_header = _NAME_HEADER.ljust(name_w0) + " " + _MODELS_HEADER
    name_w = max([len(name_header), *(len(r[0]) for r in rows)])
    num_w = 6  # "100.0" plus a space; widened below for long values
    for r in rows:
        num_w = max(num_w, *(len(c) + 1 for c in r[1:11]))

    # Column groups: name | i2t (5) | t2i (5) | RSUM | extras (each as wide as its name).
    def group(cells: list[str], width: int) -> str:
        return "".join(c.rjust(width) for c in cells)

    extra_w = [max(len(k), 6) for k in extras]
    group_w = 5 * num_w
    rsum_w = max(len("RSUM"), *(len(r[11]) for r in rows)) if rows else len("RSUM")

    def line(name: str, i2t: str, t2i: str, rsum: str, extra: list[str]) -> str:
        parts = [name.ljust(name_w), i2t, t2i, rsum.rjust(rsum_w)]
        if extras:
            parts.append(" ".join(e.rjust(w) for e, w in zip(extra, extra_w)))
        return " | ".join(parts).rstrip()

    i2t_title, t2i_title = "image-to-text".center(group_w), "text-to-image".center(group_w)
    top = line("", i2t_title, t2i_title, "", [""] * len(extras))
    subs = [_SUBHEADER[s] for s in _DIRECTION_KEYS[0][1]]
    header = line(name_header, group(subs, num_w), group(subs, num_w), "RSUM", extras)
    out = [] if title is None else [title]
    out += [top, header, "-" * len(header)]
    for r in rows:
        out.append(line(r[0], group(r[1:6], num_w), group(r[6:11], num_w), r[11], r[12:]))
    return "\n".join(out)


def format_markdown_table(
    results: Mapping[str, Mapping[str, Any]], title: str | None = None, *, models: Mapping[str, int] | None = None
) -> str:
    """The table of :func:`format_retrieval_table` as GitHub Markdown.

    Args:
        results: ``{name: metrics}`` as for :func:`format_retrieval_table`.
        title: optional heading, written as ``**title**`` above the table.
        models: ``{name: number of models}``, a ``models`` column after the name (as for
            :func:`format_retrieval_table`).

    Returns:
        The Markdown text (no trailing newline).
    """
    extras = _extra_keys(results)
    header = [_NAME_HEADER, *([_MODELS_HEADER] if models is not None else [])]
    for direction, subs in _DIRECTION_KEYS:
        header += [f"{direction} {_SUBHEADER[s]}" for s in subs]
    header += ["RSUM", *extras]
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = [] if title is None else [f"**{title}**", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join(align) + " |")
    for name, row in zip(results, _rows(results, extras)):
        if models is not None:
            row.insert(1, _model_count(models, name))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)
