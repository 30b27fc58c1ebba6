"""Word vocabulary built from training captions only (never from dev/test text)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable

from kgitm.data.text import tokenize

PAD = "<pad>"
UNK = "<unk>"


class Vocabulary:
    """Maps project tokens to ids; id 0 is padding, id 1 the unknown word.

    Args:
        words: the known words in id order, after the two special tokens.
    """

    def __init__(self, words: list[str]) -> None:
        self.itos = [PAD, UNK, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, captions: Iterable[str], *, min_count: int = 1) -> "Vocabulary":
        """Words occurring at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(t for c in captions for t in tokenize(c))
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]) -> list[int]:
        unk = self.stoi[UNK]
        return [self.stoi.get(t, unk) for t in tokens]

    def fingerprint(self) -> str:
        """Short hash of the word list, stored in checkpoints to catch a vocabulary mismatch."""
        return hashlib.sha256(json.dumps(self.itos).encode()).hexdigest()[:16]
