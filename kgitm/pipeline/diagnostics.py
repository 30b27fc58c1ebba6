"""The diagnostic caption sets of a split (SynthScenes writes them, ``docs/synthscenes.md``).

``{root}/diagnostics/{split}_relation_swap.jsonl`` and ``{split}_attribute_swap.jsonl`` hold pairs
(one JSON object a line: ``image``, ``positive``, ``negative``): a model is right on a pair when it
scores the positive caption above the negative one on the image. The retrieval sets hold the split's
captions with the category words rewritten (``k`` per image, like ``{split}_caps.txt``) and are scored
as ordinary retrieval: ``{split}_paraphrase_wordnet_caps.txt`` and ``{split}_paraphrase_other_caps.txt``
(paraphrases written for the benchmark, those WordNet reaches and the others) and the legacy
``{split}_synonym_shift_caps.txt`` (words chosen as WordNet neighbours: circular for WordNet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from kgitm.core.io import DataFormatError, read_lines
from kgitm.pipeline.dataset import CaptionSet

PAIR_SETS = ("relation_swap", "attribute_swap")
RETRIEVAL_SETS = ("paraphrase_wordnet", "paraphrase_other", "synonym_shift")

__all__ = ["DiagnosticSet", "PAIR_SETS", "RETRIEVAL_SETS", "diagnostic_sets"]


@dataclass
class DiagnosticSet:
    """One diagnostic set: two aligned caption sets (``pairs``) or one (``retrieval``)."""

    name: str
    kind: Literal["pairs", "retrieval"]
    positive: Optional[CaptionSet] = None
    negative: Optional[CaptionSet] = None
    captions: Optional[CaptionSet] = None


def _read_pairs(path: Path, split: str, num_images: int) -> list[tuple[int, str, str]]:
    rows = []
    for ln, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            rows.append((int(r["image"]), r["positive"], r["negative"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataFormatError(f"{path}:{ln}: expected a JSON object with image/positive/negative ({e})") from None
        if not 0 <= rows[-1][0] < num_images:
            raise DataFormatError(f"{path}:{ln}: image {rows[-1][0]} outside the {split} split (0..{num_images - 1})")
    return rows


def diagnostic_sets(root: str | Path, split: str, *, num_images: int, captions_per_image: int) -> dict[str, DiagnosticSet]:
    """The diagnostic sets of ``split`` found under ``root/diagnostics`` (empty when there are none).

    Args:
        root: the data folder.
        split: the split whose images the sets describe.
        num_images: images of the split (pairs must point at one of them).
        captions_per_image: ``k`` of the retrieval sets.

    Raises:
        DataFormatError: a malformed line, an image outside the split, or a retrieval set whose caption
            count is not ``k`` times the image count (messages name the file and line).
    """
    folder = Path(root) / "diagnostics"
    out: dict[str, DiagnosticSet] = {}
    if not folder.is_dir():
        return out
    for name in PAIR_SETS:
        path = folder / f"{split}_{name}.jsonl"
        if not path.exists():
            continue
        rows = _read_pairs(path, split, num_images)
        if not rows:
            continue
        img = np.array([r[0] for r in rows])
        out[name] = DiagnosticSet(
            name, "pairs",
            positive=CaptionSet(f"{split}_{name}_positive", [r[1] for r in rows], img),
            negative=CaptionSet(f"{split}_{name}_negative", [r[2] for r in rows], img),
        )
    for name in RETRIEVAL_SETS:
        path = folder / f"{split}_{name}_caps.txt"
        if not path.exists():
            continue
        captions = read_lines(path)
        if len(captions) != captions_per_image * num_images:
            raise DataFormatError(
                f"{path}: expected {captions_per_image} x {num_images} = {captions_per_image * num_images} captions "
                f"(k per image of the {split} split), found {len(captions)}; regenerate the diagnostic sets"
            )
        out[name] = DiagnosticSet(
            name, "retrieval", captions=CaptionSet(f"{split}_{name}", captions, np.arange(len(captions)) // captions_per_image)
        )
    return out
