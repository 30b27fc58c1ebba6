"""The project's own word tokenisation and the word vocabulary built on it.

Every component that needs word positions (vocabulary, text encoders, dependency graphs, textual
scene graphs) uses :func:`tokenize_with_spans`, so that token ``j`` means the same word everywhere.
Tokens are lower-cased runs of letters/digits (apostrophe suffixes such as ``'s`` are their own
token); punctuation is dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable

_TOKEN = re.compile(r"'[a-z]+|[a-z0-9]+(?:-[a-z0-9]+)*", re.IGNORECASE)

PAD = "<pad>"
UNK = "<unk>"


def tokenize_with_spans(caption: str) -> list[tuple[str, int, int]]:
    """Split ``caption`` into ``(token, start, end)`` triples with character offsets.

    Args:
        caption: raw caption text.

    Returns:
        Lower-cased tokens with the ``[start, end)`` character span of each in ``caption``.
    """
    return [(m.group(0).lower(), m.start(), m.end()) for m in _TOKEN.finditer(caption)]


def tokenize(caption: str) -> list[str]:
    """Lower-cased word tokens of ``caption`` (see :func:`tokenize_with_spans`)."""
    return [t for t, _, _ in tokenize_with_spans(caption)]


class Vocabulary:
    """Maps project tokens to ids; id 0 is padding, id 1 the unknown word.

    Built from training captions only (never from dev/test text).

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

    @classmethod
    def from_words(cls, itos: list[str]) -> "Vocabulary":
        """The vocabulary whose id order is ``itos`` (padding and unknown first, as :attr:`itos`)."""
        if list(itos[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary's first two words are {PAD!r} and {UNK!r}, got {list(itos[:2])}")
        return cls(list(itos[2:]))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]) -> list[int]:
        unk = self.stoi[UNK]
        return [self.stoi.get(t, unk) for t in tokens]

    def fingerprint(self) -> str:
        """Short hash of the word list, stored in checkpoints to catch a vocabulary mismatch."""
        return hashlib.sha256(json.dumps(self.itos).encode()).hexdigest()[:16]
