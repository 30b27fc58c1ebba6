"""A small reader of the WordNet 3.0 database files (WNDB format: ``index.*``, ``data.*``, ``*.exc``).

The one WordNet reader of kgitm: the caption parser (compound nouns), the SPICE metric and the
WordNet knowledge source all use it. No NLTK: the Debian packages ``wordnet-base`` and
``wordnet-sense-index`` put the files in ``/usr/share/wordnet`` and this module reads them directly. It offers what a concept graph needs:
synsets of a word, morphy-like lemmatisation (exception lists, then detachment rules validated against
the index), synonyms, hypernyms to a given depth, path similarity and Wu-Palmer similarity.

Synsets are identified by ``(pos, offset)`` with ``pos`` in ``"nvar"`` (satellite adjectives ``s``
are stored with ``a``, the file they live in).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = [
    "DEFAULT_WORDNET_DIR",
    "MORPHOLOGICAL_SUBSTITUTIONS",
    "POS_FILES",
    "Synset",
    "WordNet",
    "WordNetNotFoundError",
    "apply_substitutions",
    "load_wordnet",
]

#: where the Debian packages install the files; ``$KGITM_WORDNET_DIR`` overrides it
DEFAULT_WORDNET_DIR = "/usr/share/wordnet"

POS_FILES: dict[str, str] = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}

#: WordNet's detachment rules (``morphy(7WN)``): ``(suffix, replacement)`` per part of speech
MORPHOLOGICAL_SUBSTITUTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"),
          ("shes", "sh"), ("men", "man"), ("ies", "y")),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}

_HYPERNYM_POINTERS = ("@", "@i")
_INSTALL_HINT = (
    "install the Debian packages wordnet-base and wordnet-sense-index "
    "(apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index), "
    "or point wordnet_dir / $KGITM_WORDNET_DIR at a folder holding the WordNet 3.0 index.* and data.* files"
)


class WordNetNotFoundError(FileNotFoundError):
    """The WordNet database files are not where they were looked for."""


def apply_substitutions(form: str, pos: str) -> list[str]:
    """One round of the detachment rules of ``pos`` applied to ``form`` (candidates, not validated)."""
    return [form[: -len(old)] + new for old, new in MORPHOLOGICAL_SUBSTITUTIONS[pos] if form.endswith(old)]


@dataclass(frozen=True)
class Synset:
    """One synset record of a ``data.*`` file.

    Attributes:
        pos: ``n``, ``v``, ``a`` (also satellites) or ``r``.
        offset: byte offset in the data file (the synset's id within its part of speech).
        words: lemma names as written in WordNet (``"Canis_familiaris"``), adjective markers removed.
        pointers: ``(symbol, pos, offset)`` of every pointer (``@`` hypernym, ``@i`` instance hypernym, ...).
        gloss: definition and examples.
    """

    pos: str
    offset: int
    words: tuple[str, ...]
    pointers: tuple[tuple[str, str, int], ...]
    gloss: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.pos, self.offset)

    def hypernym_keys(self) -> list[tuple[str, int]]:
        return [(p, o) for s, p, o in self.pointers if s in _HYPERNYM_POINTERS]


_ROOT = ("*", -1)  # simulated root above every top synset (as NLTK does for verbs)


class WordNet:
    """Reader of a WordNet 3.0 WNDB folder.

    Args:
        wordnet_dir: folder with ``index.{noun,verb,adj,adv}``, ``data.*`` and ``*.exc``
            (default ``$KGITM_WORDNET_DIR`` or ``/usr/share/wordnet``).

    Raises:
        WordNetNotFoundError: an index or data file is missing (the message names the Debian packages).
    """

    def __init__(self, wordnet_dir: str | Path | None = None) -> None:
        root = Path(wordnet_dir or os.environ.get("KGITM_WORDNET_DIR") or DEFAULT_WORDNET_DIR)
        if not (root / "index.noun").exists() and (root / "dict" / "index.noun").exists():
            root = root / "dict"  # the layout of the Princeton tarball and of NLTK's copy
        missing = [f"{k}.{n}" for n in POS_FILES.values() for k in ("index", "data") if not (root / f"{k}.{n}").is_file()]
        if missing:
            raise WordNetNotFoundError(f"WordNet files not found in {root} (missing {', '.join(missing)}): {_INSTALL_HINT}")
        self.root = root
        self._index: dict[str, dict[str, tuple[int, ...]]] = {}
        self._exceptions: dict[str, dict[str, tuple[str, ...]]] = {}
        self._synsets: dict[tuple[str, int], Synset] = {}
        self._data_files: dict[str, io.BufferedReader] = {}  # opened on first use

    def close(self) -> None:
        """Close the open data files (they reopen on the next lookup)."""
        for f in self._data_files.values():
            f.close()
        self._data_files = {}

    def __getstate__(self) -> dict:
        # picklable (e.g. inside a deep-copied module): drop open files, keep parsed tables
        state = dict(self.__dict__)
        state["_data_files"] = {}
        return state

    def _data_file(self, pos: str) -> io.BufferedReader:
        if pos not in self._data_files:
            self._data_files[pos] = open(self.root / f"data.{POS_FILES[pos]}", "rb")  # noqa: SIM115
        return self._data_files[pos]

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # ---- files -----------------------------------------------------------------------------

    def _index_of(self, pos: str) -> dict[str, tuple[int, ...]]:
        if pos not in self._index:
            table: dict[str, tuple[int, ...]] = {}
            with open(self.root / f"index.{POS_FILES[pos]}", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith(" "):
                        continue  # licence header
                    fields = line.split()
                    n_synsets, n_pointers = int(fields[2]), int(fields[3])
                    start = 4 + n_pointers + 2
                    table[fields[0]] = tuple(int(o) for o in fields[start : start + n_synsets])
            self._index[pos] = table
        return self._index[pos]

    def _exceptions_of(self, pos: str) -> dict[str, tuple[str, ...]]:
        if pos not in self._exceptions:
            table: dict[str, tuple[str, ...]] = {}
            path = self.root / f"{POS_FILES[pos]}.exc"
            if path.is_file():
                with open(path, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        fields = line.split()
                        if len(fields) >= 2:  # a form listed twice keeps both lines' bases, in file order
                            table[fields[0]] = table.get(fields[0], ()) + tuple(fields[1:])
            self._exceptions[pos] = table
        return self._exceptions[pos]

    def synset(self, pos: str, offset: int) -> Synset:
        """The synset at ``offset`` of the ``pos`` data file (``s`` is read from ``data.adj``)."""
        pos = "a" if pos == "s" else pos
        key = (pos, offset)
        if key not in self._synsets:
            f = self._data_file(pos)
            f.seek(offset)
            line = f.readline().decode("utf-8")
            body, _, gloss = line.partition(" | ")
            fields = body.split()
            if not fields or int(fields[0]) != offset:
                raise ValueError(f"{self.root / ('data.' + POS_FILES[pos])}: no synset record at offset {offset}")
            n_words = int(fields[3], 16)
            words = tuple(w.split("(")[0] for w in fields[4 : 4 + 2 * n_words : 2])
            i = 4 + 2 * n_words
            n_pointers = int(fields[i])
            pointers = []
            for k in range(n_pointers):
                sym, off, ppos = fields[i + 1 + 4 * k : i + 4 + 4 * k]
                pointers.append((sym, "a" if ppos == "s" else ppos, int(off)))
            self._synsets[key] = Synset(pos, offset, words, tuple(pointers), gloss.strip())
        return self._synsets[key]

    # ---- words -----------------------------------------------------------------------------

    def is_lemma(self, lemma: str, pos: str) -> bool:
        return lemma in self._index_of(pos)

    def lemmas(self, pos: str) -> frozenset[str]:
        """Every lemma of part of speech ``pos`` in the index (multi-word lemmas joined by ``_``)."""
        if pos in self._index:
            return frozenset(self._index[pos])
        # the first field of each record only: three times faster than parsing the synset offsets
        # (a parser starting up needs the lemmas, not the offsets)
        with open(self.root / f"index.{POS_FILES[pos]}", encoding="utf-8", errors="replace") as f:
            return frozenset(line.split(" ", 1)[0] for line in f if not line.startswith(" "))

    def synset_keys(self, lemma: str, pos: str | None = None) -> frozenset[tuple[str, int]]:
        """Keys ``(pos, offset)`` of the synsets listing ``lemma`` itself (no morphology; spaces as
        ``_``), in part of speech ``pos`` or all four."""
        key = lemma.replace(" ", "_")
        return frozenset((p, off) for p in ((pos,) if pos else tuple(POS_FILES)) for off in self._index_of(p).get(key, ()))

    def base_form(self, form: str, pos: str) -> str | None:
        """One base form of ``form`` as ``pos``, in the order the SPICE metric uses: the first entry of
        the exception list, else ``form`` itself when it is a lemma, else the first result of one round
        of detachment rules that is a lemma; ``None`` when none is. (:meth:`morphy_all` keeps all
        candidates and prefers the form itself.)"""
        exceptions = self._exceptions_of(pos)
        if form in exceptions:
            return exceptions[form][0]
        index = self._index_of(pos)
        if form in index:
            return form
        for old, new in MORPHOLOGICAL_SUBSTITUTIONS[pos]:
            if form.endswith(old) and len(form) > len(old):
                base = form[: len(form) - len(old)] + new
                if base in index:
                    return base
        return None

    def morphy_all(self, form: str, pos: str) -> list[str]:
        """Every base form of ``form`` as part of speech ``pos`` that WordNet knows, best first.

        WordNet's algorithm: a form listed in the exception file maps to its listed bases (and to itself
        when it is a lemma); otherwise the form itself and the results of one round of detachment
        rules, then further rounds until something is found, keeping only forms in the index.
        """
        form = form.lower().strip().replace(" ", "_")
        index = self._index_of(pos)

        def known(forms: list[str]) -> list[str]:
            return list(dict.fromkeys(f for f in forms if f in index))

        exceptions = self._exceptions_of(pos)
        if form in exceptions:
            return known([form, *exceptions[form]])
        forms = apply_substitutions(form, pos)
        found = known([form, *forms])
        while not found and forms:
            forms = [g for f in forms for g in apply_substitutions(f, pos)]
            found = known(forms)
        return found

    def morphy(self, form: str, pos: str | None = None) -> str | None:
        """The first base form of ``form`` (any part of speech in the order n, v, a, r when ``pos`` is None)."""
        for p in (pos,) if pos else tuple(POS_FILES):
            found = self.morphy_all(form, p)
            if found:
                return found[0]
        return None

    def synsets(self, word: str, pos: str | None = None, *, max_senses: int | None = None) -> list[Synset]:
        """Synsets of ``word`` (after morphy), most frequent sense first, at most ``max_senses`` per lemma."""
        out: dict[tuple[str, int], Synset] = {}
        for p in (pos,) if pos else tuple(POS_FILES):
            for lemma in self.morphy_all(word, p):
                offsets = self._index_of(p)[lemma][:max_senses]
                for off in offsets:
                    s = self.synset(p, off)
                    out.setdefault(s.key, s)
        return list(out.values())

    def synonyms(self, word: str, pos: str | None = None, *, max_senses: int | None = None) -> list[str]:
        """Lemma names sharing a synset with ``word`` (as written in WordNet, e.g. ``Canis_familiaris``)."""
        names = [w for s in self.synsets(word, pos, max_senses=max_senses) for w in s.words]
        return list(dict.fromkeys(names))

    def hypernyms(self, word: str, pos: str | None = None, *, depth: int = 1, max_senses: int | None = None) -> list[str]:
        """Lemma names of the hypernyms of ``word``'s synsets up to ``depth`` steps up."""
        names: list[str] = []
        for s in self.synsets(word, pos, max_senses=max_senses):
            for key, dist in self.ancestors(s.key).items():
                if 1 <= dist <= depth and key != _ROOT:
                    names.extend(self.synset(*key).words)
        return list(dict.fromkeys(names))

    # ---- structure -------------------------------------------------------------------------

    @lru_cache(maxsize=None)  # noqa: B019 - one reader per process, the cache is the point
    def ancestors(self, key: tuple[str, int]) -> dict[tuple[str, int], int]:
        """Shortest hypernym distance from synset ``key`` to each ancestor (itself at 0, a simulated
        root one step above every top synset)."""
        dist = {key: 0}
        frontier = [key]
        tops: list[int] = []
        while frontier:
            nxt = []
            for k in frontier:
                ups = self.synset(*k).hypernym_keys()
                if not ups:
                    tops.append(dist[k])
                for u in ups:
                    if u not in dist:
                        dist[u] = dist[k] + 1
                        nxt.append(u)
            frontier = nxt
        dist[_ROOT] = min(tops) + 1
        return dist

    @lru_cache(maxsize=None)  # noqa: B019
    def max_depth(self, key: tuple[str, int]) -> int:
        """Length of the longest hypernym path from ``key`` to a top synset (the simulated root is -1)."""
        if key == _ROOT:
            return -1
        ups = self.synset(*key).hypernym_keys()
        return 1 + max(self.max_depth(u) for u in ups) if ups else 0

    def shortest_path_distance(self, a: tuple[str, int], b: tuple[str, int]) -> int:
        """Edges on the shortest path between two synsets through a common hypernym."""
        da, db = self.ancestors(a), self.ancestors(b)
        return min(da[k] + db[k] for k in da.keys() & db.keys())

    def path_similarity(self, a: tuple[str, int], b: tuple[str, int]) -> float:
        """``1 / (shortest path distance + 1)``; 1 for the same synset."""
        return 1.0 / (self.shortest_path_distance(a, b) + 1)

    def wup_similarity(self, a: tuple[str, int], b: tuple[str, int]) -> float:
        """Wu-Palmer similarity ``2 d(lcs) / (d(lcs) + dist(a, lcs) + d(lcs) + dist(b, lcs))``, where the
        lowest common subsumer is the common hypernym of greatest depth and ``d`` counts nodes from
        the top (so ``d`` is at least 1 and the same synset scores 1)."""
        da, db = self.ancestors(a), self.ancestors(b)
        common = da.keys() & db.keys()
        lcs = max(common, key=lambda k: (self.max_depth(k), -(da[k] + db[k]), k))
        depth = self.max_depth(lcs) + 2 if lcs == _ROOT else self.max_depth(lcs) + 1
        return 2.0 * depth / (da[lcs] + db[lcs] + 2.0 * depth)


_READERS: dict[str, WordNet | None] = {}


def load_wordnet(wordnet_dir: str | Path | None = None, *, required: bool = False) -> WordNet | None:
    """The reader of ``wordnet_dir`` (default ``$KGITM_WORDNET_DIR`` or ``/usr/share/wordnet``), made
    once per folder and process; ``None`` when the files are missing, unless ``required`` (then
    :class:`WordNetNotFoundError` with the install hint)."""
    root = str(wordnet_dir or os.environ.get("KGITM_WORDNET_DIR") or DEFAULT_WORDNET_DIR)
    if root not in _READERS:
        try:
            _READERS[root] = WordNet(root)
        except WordNetNotFoundError:
            if required:
                raise
            return None
    return _READERS[root]
