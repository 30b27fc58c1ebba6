"""English word forms: the one table of irregular lemmas, and base-form candidates of a word.

Three parts of kgitm need base forms without running a parser: the caption parser repairs spaCy's
lemmas, the scene-graph collation finds a predicate's words among a caption's tokens (``"sit on"``
in "a cat sitting on a mat"), and the knowledge sources map caption words to concepts. All read the
irregular forms from :data:`IRREGULAR_LEMMAS`.

Candidate generators (their outputs are not validated; callers keep the candidates they can use):

* :func:`detachment_candidates`: WordNet's own detachment rules (``morphy(7WN)``), two rounds, plus
  the irregular table. The concept mapper uses these, so a source without WordNet maps words the way
  WordNet's morphology would.
* :func:`inflection_candidates`: suffix stripping that also undoes doubled consonants
  (``sitting`` -> ``sit``) and ``-ied`` (``carried`` -> ``carry``); predicate-word matching uses it,
  because spaCy's predicate lemmas (``sit``) must be found among inflected caption tokens.
"""

from __future__ import annotations

import re

from kgitm.core.wordnet import MORPHOLOGICAL_SUBSTITUTIONS, apply_substitutions

__all__ = [
    "IRREGULAR_LEMMAS",
    "OWN_LEMMA",
    "SPACY_LEMMA_ERRORS",
    "detachment_candidates",
    "inflection_candidates",
    "parser_lemma_repairs",
]

#: Irregular plurals and verb forms that suffix rules cannot reach: form -> lemma.
IRREGULAR_LEMMAS: dict[str, str] = {
    # nouns
    "men": "man", "women": "woman", "children": "child", "people": "person", "feet": "foot",
    "teeth": "tooth", "geese": "goose", "mice": "mouse", "oxen": "ox", "sheep": "sheep",
    # be, have
    "is": "be", "are": "be", "was": "be", "were": "be", "am": "be", "been": "be", "being": "be",
    "has": "have", "had": "have", "having": "have",
    # verbs
    "sat": "sit", "ran": "run", "rode": "ride", "ridden": "ride", "stood": "stand", "held": "hold",
    "took": "take", "ate": "eat", "wore": "wear", "worn": "wear", "swam": "swim", "threw": "throw",
    "thrown": "throw", "flew": "fly", "lay": "lie", "lying": "lie", "dying": "die",
}

#: Forms that are their own lemma although they look inflected (pluralia tantum such as eyewear and
#: garments; ``people`` as a scene-graph object name; ``haired`` as in "long haired").
OWN_LEMMA: frozenset[str] = frozenset(
    ("glasses", "sunglasses", "jeans", "pants", "shorts", "clothes", "trunks", "people", "haired")
)

#: Known lemmatiser errors of spaCy's small English pipeline: its rule lemmatiser strips "-ing" to a
#: real word when one exists ("riding" -> "rid"), and a few plurals and participles go astray.
SPACY_LEMMA_ERRORS: dict[str, str] = {
    "riding": "ride", "rides": "ride", "skiing": "ski", "skis": "ski", "biking": "bike", "hiking": "hike",
    "leaves": "leaf", "laying": "lay", "skateboarding": "skateboard", "snowboarding": "snowboard",
    "surfing": "surf", "parked": "park",
}

#: Irregular forms the parser repairs as well (spaCy gets the others right).
_PARSER_IRREGULAR = ("rode", "ridden", "lying")


def parser_lemma_repairs() -> dict[str, str]:
    """The caption parser's lemma overrides (lower-cased word -> lemma): spaCy's known errors, the
    irregular forms it misses, and the forms that are their own lemma."""
    repairs = {w: IRREGULAR_LEMMAS[w] for w in _PARSER_IRREGULAR}
    repairs.update(SPACY_LEMMA_ERRORS)
    repairs.update({w: w for w in OWN_LEMMA})
    return repairs


_WORDLIKE = re.compile(r"^[a-z][a-z_'-]*$")


def detachment_candidates(word: str) -> list[str]:
    """Candidate base forms of ``word``: its irregular lemma, then every form that one or two rounds of
    WordNet's detachment rules (any part of speech) give; ``word`` itself is left out."""
    out = [IRREGULAR_LEMMAS[word]] if word in IRREGULAR_LEMMAS else []
    if _WORDLIKE.match(word):
        for pos in MORPHOLOGICAL_SUBSTITUTIONS:
            forms = [word]
            for _ in range(2):
                forms = [g for f in forms for g in apply_substitutions(f, pos)]
                out.extend(forms)
    return [f for f in dict.fromkeys(out) if f and f != word]


_VOWELS = frozenset("aeiou")


def inflection_candidates(token: str) -> set[str]:
    """Possible lemmas of an inflected token by suffix stripping, the token included
    (``riding`` -> ``ride``, ``rid``; ``sitting`` -> ``sit``; ``carried`` -> ``carry``)."""
    out = {token}
    if token in IRREGULAR_LEMMAS:
        out.add(IRREGULAR_LEMMAS[token])
    for suffix in ("ing", "ed"):
        if token.endswith(suffix) and len(token) > len(suffix) + 1:
            stem = token[: -len(suffix)]
            out.update({stem, stem + "e"})
            if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in _VOWELS:  # sitting -> sit
                out.add(stem[:-1])
            if suffix == "ed" and stem.endswith("i"):  # carried -> carry
                out.add(stem[:-1] + "y")
    if token.endswith("ies") and len(token) > 4:
        out.add(token[:-3] + "y")
    if token.endswith("es") and len(token) > 3:
        out.add(token[:-2])
    if token.endswith("s") and not token.endswith("ss") and len(token) > 2:
        out.add(token[:-1])
    return out
