"""Caption corpora for concept statistics, and caption-level concept counting.

Three layouts are read: a precomp ``{split}_caps.txt`` or any plain one-caption-per-line file
(``format="lines"``), and the Flickr8k token file (``format="flickr8k"``: ``image.jpg#k<TAB>caption``),
optionally restricted to the images listed in a split file (``Flickr_8k.trainImages.txt``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp


__all__ = ["CorpusFormat", "EmptyCorpusError", "count_cooccurrences", "detect_format", "read_captions"]

CorpusFormat = Literal["auto", "lines", "flickr8k"]
_FLICKR_LINE = re.compile(r"^([^\t#]+)#\d+\t(.*)$")


class EmptyCorpusError(ValueError):
    """A caption corpus (after the split restriction) holds no captions."""


def detect_format(path: str | Path) -> Literal["lines", "flickr8k"]:
    """``flickr8k`` when the first non-empty line looks like ``name.jpg#0<TAB>caption``, else ``lines``."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return "flickr8k" if _FLICKR_LINE.match(line.rstrip("\n")) else "lines"
    return "lines"


def read_captions(
    path: str | Path,
    *,
    format: CorpusFormat = "auto",
    split_file: str | Path | None = None,
) -> list[str]:
    """The captions of a corpus file, in file order.

    Args:
        path: caption file.
        format: ``lines``, ``flickr8k`` or ``auto`` (detected from the first line; default).
        split_file: Flickr8k only: keep captions of the images listed in this file (one name a line).

    Raises:
        FileNotFoundError: ``path`` or ``split_file`` is missing.
        ValueError: a malformed line in a Flickr8k file (file and line number given), or a split file
            with a ``lines`` corpus.
        EmptyCorpusError: no captions left.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption corpus {path} not found")
    fmt = detect_format(path) if format == "auto" else format
    keep: set[str] | None = None
    if split_file is not None:
        if fmt != "flickr8k":
            raise ValueError(f"{path}: a split file only applies to the Flickr8k token format (this file reads as {fmt!r})")
        split_path = Path(split_file)
        if not split_path.is_file():
            raise FileNotFoundError(f"split file {split_path} not found")
        keep = {ln.strip() for ln in split_path.read_text(encoding="utf-8").splitlines() if ln.strip()}
    captions: list[str] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            if fmt == "flickr8k":
                m = _FLICKR_LINE.match(line)
                if m is None:
                    raise ValueError(f"{path}:{lineno}: expected 'image.jpg#k<TAB>caption', got {line[:80]!r}")
                if keep is not None and m.group(1) not in keep:
                    continue
                captions.append(m.group(2).strip())
            else:
                captions.append(line.strip())
    if not captions:
        detail = f" for the images of {split_file}" if split_file is not None else ""
        raise EmptyCorpusError(f"{path}: no captions found{detail}; give a non-empty caption file")
    return captions


def count_cooccurrences(caption_concepts: Iterable[Iterable[int]], num_concepts: int) -> tuple[np.ndarray, np.ndarray]:
    """Caption-level concept counts and co-occurrence counts (what CVSE's ``nums``/``adj_all`` hold).

    A concept is counted once per caption however often it occurs; two concepts co-occur when one
    caption holds both. The diagonal of the co-occurrence matrix is 0.

    Returns:
        ``counts`` int64 ``(C,)`` and ``cooccurrence`` int64 ``(C, C)`` (symmetric).
    """
    rows, cols = [], []
    n_caps = 0
    for k, concepts in enumerate(caption_concepts):
        n_caps = k + 1
        for c in set(concepts):
            rows.append(k)
            cols.append(c)
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, cols)), shape=(n_caps, num_concepts))
    counts = np.asarray(m.sum(0)).reshape(-1).astype(np.int64)
    cooc = (m.T @ m).toarray().astype(np.int64)
    np.fill_diagonal(cooc, 0)
    return counts, cooc
