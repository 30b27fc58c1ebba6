"""The project's own word tokenisation and the word vocabulary built on it.

Every component that needs word positions (vocabulary, text encoders, dependency graphs, textual
scene graphs) uses :func:`tokenize_with_spans`, so that token ``j`` means the same word everywhere.
Tokens are lower-cased runs of letters/digits (apostrophe suffixes such as ``'s`` are their own
token); punctuation is dropped.

Models converted from a release (``kgitm convert-checkpoint``) were trained on another tokenisation:
``nltk.word_tokenize(caption.lower())``, punctuation kept, wrapped in ``<start>``/``<end>``.
:func:`tokenize_treebank` reproduces it without NLTK, and :func:`caption_tokenizer` gives the
data pipeline the one a config names (``data.tokenizer``, ``data.boundary_tokens``). Graphs index the
project's tokens, so those options and a graph store exclude each other (the data module refuses both).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Optional

_TOKEN = re.compile(r"'[a-z]+|[a-z0-9]+(?:-[a-z0-9]+)*", re.IGNORECASE)

PAD = "<pad>"
UNK = "<unk>"
#: the boundary tokens of the released SCAN/VSE++-style vocabularies (``data.boundary_tokens``)
START = "<start>"
END = "<end>"


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


# ---- the releases' tokenisation: Penn Treebank conventions, as NLTK's word_tokenize applies them ----
# (re-implemented from the Treebank conventions, so that no NLTK and no punkt model is needed)
_SUBSTITUTIONS: list[tuple[re.Pattern[str], str]] = [
    # opening quotes
    (re.compile(r"([«“‘„]|`+)"), r" \1 "),
    (re.compile(r'^"'), "``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ (\[{<])(\"|'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(')(?!re|ve|ll|m|t|s|d|n)(\w)\b"), r"\1 \2"),
    # punctuation
    (re.compile(r"([^.])(\.)([\])}>\"']*)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.\.\."), " ... "),  # an ellipsis (NLTK 3.2 and later alike; ".." stays with its word)
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
    (re.compile(r"[\]\[(){}<>]"), r" \g<0> "),
    (re.compile(r"--"), r" -- "),
]
_ENDING: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"([»”’])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
_SPLIT_WORDS = [
    re.compile(p)
    for p in (r"(?i)\b(can)(not)\b", r"(?i)\b(d)('ye)\b", r"(?i)\b(gim)(me)\b", r"(?i)\b(gon)(na)\b",
              r"(?i)\b(got)(ta)\b", r"(?i)\b(lem)(me)\b", r"(?i)\b(more)('n)\b", r"(?i)\b(wan)(na)(?=\s)",
              r"(?i) ('t)(is)\b", r"(?i) ('t)(was)\b")
]
#: a period followed by a space ends a sentence (punkt's split inside a caption) unless it ends an
#: abbreviation or an initialism (``u.s.``); punkt's learned abbreviation list is longer than this one
_SENTENCE_END = re.compile(r"(?<=[^\s.])\.(?=\s+\S)")
_ABBREVIATION = re.compile(r"(?:^|\s)(?:(?:[a-z]\.)+[a-z]?|mr|mrs|ms|dr|st|jr|sr|vs|etc|no|mt|ft|inc|co)$", re.IGNORECASE)


def _sentences(text: str) -> list[str]:
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if _ABBREVIATION.search(text[start : m.start()]):
            continue
        out.append(text[start : m.end()])
        start = m.end()
    out.append(text[start:])
    return [s for s in out if s.strip()]


def _treebank_sentence(text: str) -> list[str]:
    for pattern, sub in _SUBSTITUTIONS:
        text = pattern.sub(sub, text)
    text = f" {text} "
    for pattern, sub in _ENDING:
        text = pattern.sub(sub, text)
    for pattern in _SPLIT_WORDS:
        text = pattern.sub(r" \1 \2 ", text)
    return text.split()


def tokenize_treebank(caption: str) -> list[str]:
    """The released models' tokens of ``caption``: lower-cased, Penn Treebank conventions as
    ``nltk.tokenize.word_tokenize(caption.lower())`` applies them (SCAN/VSE++ ``data.py``).

    Punctuation is kept as tokens (``,`` ``.``), clitics are split (``man's`` -> ``man 's``,
    ``don't`` -> ``do n't``), double quotes become two backquotes (opening) and two single quotes
    (closing), and a caption of several sentences has a
    ``.`` token at each sentence end (NLTK's punkt split, approximated: a period before a space,
    except after an initialism or a common abbreviation).
    """
    return [t for sentence in _sentences(caption.lower()) for t in _treebank_sentence(sentence)]


#: ``data.tokenizer`` names: the project's words, or the releases' Treebank tokens (``"ids"``, captions
#: given as the ids of a release's vocabulary, is :class:`CaptionTokenizer`'s own)
TOKENIZERS = {"words": tokenize, "treebank": tokenize_treebank}


class CaptionTokenizer:
    """A caption -> tokens function chosen by name, optionally truncated and wrapped in
    :data:`START`/:data:`END` (picklable, for data loader workers).

    Args:
        name: a key of :data:`TOKENIZERS` (``"words"``: :func:`tokenize`; ``"treebank"``:
            :func:`tokenize_treebank`), or ``"ids"``: the caption is already tokenised, as comma-separated
            ids of ``id_words`` (GSMN's ``{split}_precaps_stan.txt``: ids of CoreNLP tokens).
        boundary_tokens: wrap every caption in ``<start>`` ... ``<end>`` (the releases' ids 1 and 2).
        max_words: keep at most this many tokens of the caption (before the boundary tokens; default all).
        id_words: for ``"ids"``: the words of the ids, in id order (a release's vocabulary).
    """

    def __init__(
        self, name: str = "words", *, boundary_tokens: bool = False, max_words: Optional[int] = None,
        id_words: Optional[list[str]] = None,
    ) -> None:
        if name not in (*TOKENIZERS, "ids"):
            raise ValueError(f"tokenizer {name!r}: choose one of {', '.join(TOKENIZERS)}, ids")
        if (name == "ids") != (id_words is not None):
            raise ValueError("tokenizer 'ids' needs the words of the ids (data.id_vocabulary), and only it uses them")
        self.name = name
        self.boundary_tokens = boundary_tokens
        self.max_words = max_words
        self.id_words = id_words

    def _ids(self, caption: str) -> list[str]:
        try:
            ids = [int(t) for t in caption.split(",") if t.strip()]
        except ValueError:
            raise ValueError(f"expected comma-separated integer ids, got {caption[:60]!r}") from None
        bad = [i for i in ids if not 0 <= i < len(self.id_words)]
        if bad:
            raise ValueError(f"id {bad[0]} is outside the id vocabulary (0..{len(self.id_words) - 1})")
        return [self.id_words[i] for i in ids]

    def __call__(self, caption: str) -> list[str]:
        tokens = (self._ids(caption) if self.name == "ids" else TOKENIZERS[self.name](caption))[: self.max_words]
        return [START, *tokens, END] if tokens and self.boundary_tokens else tokens

    def is_default(self) -> bool:
        """True for the project's own tokens (what graphs and knowledge sources index)."""
        return self.name == "words" and not self.boundary_tokens


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
    def build(cls, captions: Iterable[str], *, min_count: int = 1, tokenizer: Callable[[str], list[str]] = tokenize) -> "Vocabulary":
        """Words occurring at least ``min_count`` times, most frequent first (ties alphabetical), as
        ``tokenizer`` splits the captions (default :func:`tokenize`)."""
        counts = Counter(t for c in captions for t in tokenizer(c))
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
