"""The project's own word tokenisation.

Every component that needs word positions (vocabulary, text encoders, dependency graphs, textual
scene graphs) uses :func:`tokenize_with_spans`, so that token ``j`` means the same word everywhere.
Tokens are lower-cased runs of letters/digits (apostrophe suffixes such as ``'s`` are their own
token); punctuation is dropped.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"'[a-z]+|[a-z0-9]+(?:-[a-z0-9]+)*", re.IGNORECASE)


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
