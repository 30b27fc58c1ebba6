"""SynthScenes vocabulary: object kinds and categories, attributes and their groups, relation
predicates, scene contexts and their stuff classes.

Every word is a WordNet 3.0 lemma (tests/test_synthscenes.py checks this). The order of each table is
part of the determinism contract: the samplers draw indices into these tuples and the prototype
table's rows follow them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

KINDS = ("person", "animal", "vehicle", "furniture", "object", "plant")


@dataclass(frozen=True)
class Category:
    """An object category.

    Attributes:
        name: canonical (WordNet) name, used in scene graphs and diagnostics triples.
        kind: one of :data:`KINDS`; decides box sizes, attributes and allowed relations.
        train_words: surface words used in train/dev/test captions (first = canonical).
        shift_word: held-out WordNet synonym/hyponym/hypernym used only in the synonym-shift
            captions, or ``None``.
        shift_relation: how ``shift_word`` relates to ``name`` in WordNet.
        attributes: attribute names this category can carry.
    """

    name: str
    kind: str
    train_words: tuple[str, ...]
    shift_word: str | None
    shift_relation: str | None
    attributes: tuple[str, ...]


_COLOURS = ("red", "blue", "green", "yellow", "white", "black", "brown", "gray", "pink")
_ATTR_BY_KIND: dict[str, tuple[str, ...]] = {
    "person": ("tall", "young", "smiling"),
    "animal": ("small", "large", "black", "white", "brown", "gray", "spotted"),
    "vehicle": ("small", "large", "red", "blue", "white", "black", "yellow", "green"),
    "furniture": ("small", "large", "wooden", "metal", "plastic", "red", "blue", "white", "black", "brown", "green"),
    "object": ("small", "large", "plastic", "metal", "striped") + _COLOURS,
    "clothing": ("striped", "red", "blue", "green", "yellow", "white", "black", "pink", "brown"),
    "food": ("small", "large", "fresh"),
    "plant": ("tall", "small", "large", "green"),
}


def _cat(name: str, kind: str, words: Sequence[str], shift: str | None, rel: str | None, akind: str | None = None) -> Category:
    return Category(name, kind, tuple(words), shift, rel, _ATTR_BY_KIND[akind or kind])


CATEGORIES: tuple[Category, ...] = (
    _cat("man", "person", ["man", "guy"], "gentleman", "hyponym"),
    _cat("woman", "person", ["woman", "lady"], "female", "hypernym"),
    _cat("boy", "person", ["boy"], "lad", "hyponym"),
    _cat("girl", "person", ["girl"], "lass", "hyponym"),
    _cat("dog", "animal", ["dog", "puppy"], "pooch", "hyponym"),
    _cat("cat", "animal", ["cat", "kitten"], "feline", "hypernym"),
    _cat("horse", "animal", ["horse", "pony"], "mare", "hyponym"),
    _cat("cow", "animal", ["cow"], "heifer", "hyponym"),
    _cat("sheep", "animal", ["sheep"], "ewe", "hyponym"),
    _cat("bird", "animal", ["bird"], None, None),
    _cat("duck", "animal", ["duck"], "mallard", "hyponym"),
    _cat("car", "vehicle", ["car", "automobile"], "auto", "synonym"),
    _cat("bicycle", "vehicle", ["bicycle", "bike"], "cycle", "synonym"),
    _cat("motorcycle", "vehicle", ["motorcycle", "motorbike"], None, None),
    _cat("bus", "vehicle", ["bus"], "minibus", "hyponym"),
    _cat("truck", "vehicle", ["truck"], "lorry", "hyponym"),
    _cat("boat", "vehicle", ["boat"], "motorboat", "hyponym"),
    _cat("table", "furniture", ["table"], None, None),
    _cat("chair", "furniture", ["chair"], "armchair", "hyponym"),
    _cat("bench", "furniture", ["bench"], "pew", "hyponym"),
    _cat("couch", "furniture", ["couch", "sofa"], "divan", "hyponym"),
    _cat("bed", "furniture", ["bed"], "cot", "hyponym"),
    _cat("cup", "object", ["cup"], "teacup", "hyponym"),
    _cat("bottle", "object", ["bottle"], "flask", "hyponym"),
    _cat("bowl", "object", ["bowl"], None, None),
    _cat("book", "object", ["book"], "volume", "synonym"),
    _cat("ball", "object", ["ball"], "football", "hyponym"),
    _cat("bag", "object", ["bag"], "backpack", "hyponym"),
    _cat("box", "object", ["box"], "crate", "hyponym"),
    _cat("phone", "object", ["phone", "telephone"], "handset", "hyponym"),
    _cat("laptop", "object", ["laptop"], None, None),
    _cat("umbrella", "object", ["umbrella"], "brolly", "hyponym"),
    _cat("kite", "object", ["kite"], None, None),
    _cat("lamp", "object", ["lamp"], "lantern", "hyponym"),
    _cat("clock", "object", ["clock"], "timepiece", "hypernym"),
    _cat("vase", "object", ["vase"], "urn", "hyponym"),
    _cat("pillow", "object", ["pillow"], "cushion", "hypernym"),
    _cat("frisbee", "object", ["frisbee"], None, None),
    _cat("hat", "object", ["hat"], "fedora", "hyponym", "clothing"),
    _cat("shirt", "object", ["shirt"], "jersey", "hyponym", "clothing"),
    _cat("jacket", "object", ["jacket"], "blazer", "hyponym", "clothing"),
    _cat("cake", "object", ["cake"], "cupcake", "hyponym", "food"),
    _cat("sandwich", "object", ["sandwich"], "hamburger", "hyponym", "food"),
    _cat("pizza", "object", ["pizza"], None, None, "food"),
    _cat("banana", "object", ["banana"], None, None, "food"),
    _cat("tree", "plant", ["tree"], None, None),
    _cat("flower", "plant", ["flower"], "blossom", "synonym"),
    _cat("bush", "plant", ["bush", "shrub"], None, None),
)
_CAT_INDEX = {c.name: i for i, c in enumerate(CATEGORIES)}

#: Held-out paraphrases of the categories for the paraphrase-shift diagnostic sets: everyday words a
#: caption writer might use instead of the training words (informal, regional or more specific),
#: written for this benchmark from general English, not drawn from WordNet or any other knowledge
#: source of kgitm. None appears in a training caption. Which of them a source can reach is measured
#: per source (``scripts/paraphrase_reach.py``, ``docs/synthscenes.md``); the legacy synonym-shift set
#: (``Category.shift_word``) was chosen from WordNet neighbours and is circular for WordNet.
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "man": ("fellow", "gent"), "woman": ("gal", "dame"), "boy": ("youngster", "schoolboy"),
    "girl": ("lassie", "schoolgirl"), "dog": ("doggy", "hound"), "cat": ("kitty", "moggy"),
    "horse": ("steed", "colt"), "cow": ("cattle", "calf"), "sheep": ("lamb", "ewe"),
    "bird": ("birdie", "songbird"), "duck": ("duckling", "drake"), "car": ("auto", "sedan"),
    "bicycle": ("cycle", "pushbike"), "motorcycle": ("scooter", "moped"), "bus": ("coach", "shuttle"),
    "truck": ("lorry", "pickup"), "boat": ("ship", "dinghy"), "table": ("desk", "countertop"),
    "chair": ("stool", "armchair"), "bench": ("pew", "bleacher"), "couch": ("settee", "loveseat"),
    "bed": ("cot", "mattress"), "cup": ("mug", "teacup"), "bottle": ("flask", "jug"),
    "bowl": ("dish", "basin"), "book": ("novel", "paperback"), "ball": ("football", "baseball"),
    "bag": ("backpack", "purse"), "box": ("crate", "carton"), "phone": ("cellphone", "smartphone"),
    "laptop": ("notebook", "computer"), "umbrella": ("parasol", "brolly"), "lamp": ("lantern", "light"),
    "clock": ("timepiece", "timer"), "vase": ("urn", "jar"), "pillow": ("cushion", "bolster"),
    "frisbee": ("disc",), "hat": ("cap", "beanie"), "shirt": ("blouse", "tee"), "jacket": ("coat", "blazer"),
    "cake": ("cupcake", "pastry"), "sandwich": ("sub", "burger"), "pizza": ("pie",), "banana": ("plantain",),
    "tree": ("oak", "pine"), "flower": ("blossom", "bloom"), "bush": ("hedge", "shrubbery"),
}

#: The paraphrases that kgitm's WordNet source (``configs/knowledge/wordnet.yaml``: synonyms and
#: direct hypernyms of the word's senses) maps to their category, measured with
#: ``scripts/paraphrase_reach.py`` on the default data; ``tests/test_synthscenes.py`` checks it against
#: WordNet. They make the ``paraphrase_wordnet`` diagnostic set, the others ``paraphrase_other``.
PARAPHRASES_WORDNET: frozenset[str] = frozenset((
    "armchair", "auto", "backpack", "baseball", "blazer", "bloom", "blossom", "bolster", "brolly",
    "burger", "carton", "cot", "crate", "doggy", "drake", "duckling", "ewe", "flask", "football", "hound",
    "jug", "kitty", "lantern", "lassie", "lorry", "loveseat", "moped", "oak", "pew", "pickup", "plantain",
    "purse", "schoolboy", "sedan", "sub", "teacup", "urn",
))

# Attribute name -> group. Attributes of one group exclude each other on an object and are the
# ones exchanged by the attribute-swap diagnostic. No attribute starts with a vowel, so the article
# before an attributed noun is always "a" and swapping attributes keeps the bag of words.
ATTRIBUTE_GROUPS: dict[str, str] = {
    "small": "size", "large": "size", "tall": "size", "young": "age", "smiling": "expression",
    "fresh": "state", "striped": "pattern", "spotted": "pattern",
    **{c: "colour" for c in _COLOURS}, "wooden": "material", "metal": "material", "plastic": "material",
}
ATTRIBUTES: tuple[str, ...] = tuple(ATTRIBUTE_GROUPS)
_ATTR_INDEX = {a: i for i, a in enumerate(ATTRIBUTES)}
_GROUP_ORDER = ("size", "age", "expression", "state", "pattern", "colour", "material")  # English adjective order


@dataclass(frozen=True)
class Predicate:
    """A relation predicate.

    Attributes:
        name: canonical name (scene graphs, triples).
        geometry: layout rule; inverse predicates (``under``) reuse the rule of their converse
            (``on``) with the roles exchanged.
        inverse: whether ``geometry`` is applied with subject and object exchanged.
        semantic: adds a relation appearance component (equally to both regions).
        symmetric: true when the predicate also holds with the roles exchanged (``next to``);
            symmetric predicates never enter the relation-swap diagnostic.
        kind_pairs: unordered pairs of kinds the predicate may join (sampling is symmetric).
        surface: phrasings used in captions.
        weight: base sampling weight.
    """

    name: str
    geometry: str
    inverse: bool
    semantic: bool
    symmetric: bool
    kind_pairs: tuple[tuple[str, str], ...]
    surface: tuple[str, ...]
    weight: float


_SAME = lambda *ks: tuple((k, k) for k in ks)  # noqa: E731
_ALL_PAIRS = tuple((a, b) for i, a in enumerate(KINDS) for b in KINDS[i:])
_STACK = _SAME("object", "animal", "furniture")
_AGENTS = _SAME("person", "animal")

PREDICATES: tuple[Predicate, ...] = (
    Predicate("on", "on", False, False, False, _STACK, ("on", "on top of"), 0.10),
    Predicate("under", "on", True, False, False, _STACK, ("under", "underneath", "beneath"), 0.08),
    Predicate("above", "above", False, False, False, _STACK + _SAME("plant"), ("above", "over"), 0.06),
    Predicate("below", "above", True, False, False, _STACK + _SAME("plant"), ("below",), 0.05),
    Predicate("left of", "left of", False, False, False, _ALL_PAIRS, ("to the left of", "left of"), 0.10),
    Predicate("right of", "left of", True, False, False, _ALL_PAIRS, ("to the right of", "right of"), 0.10),
    Predicate("in front of", "in front of", False, False, False, _ALL_PAIRS, ("in front of",), 0.08),
    Predicate("behind", "in front of", True, False, False, _ALL_PAIRS, ("behind",), 0.08),
    Predicate("next to", "next to", False, False, True, _ALL_PAIRS, ("next to", "by"), 0.10),
    Predicate("near", "near", False, False, True, _ALL_PAIRS, ("near", "close to"), 0.05),
    Predicate("riding", "riding", False, True, False, _AGENTS, ("riding", "riding on"), 0.04),
    Predicate("holding", "holding", False, True, False, _SAME("person"), ("holding",), 0.05),
    Predicate("carrying", "carrying", False, True, False, _AGENTS, ("carrying",), 0.04),
    Predicate("sitting on", "sitting on", False, True, False, _AGENTS, ("sitting on",), 0.04),
    Predicate("standing on", "standing on", False, True, False, _AGENTS, ("standing on",), 0.03),
)
_PRED_INDEX = {p.name: i for i, p in enumerate(PREDICATES)}


@dataclass(frozen=True)
class Scene:
    """A scene context: categories in decreasing frequency (Zipf weights) and its stuff classes."""

    name: str
    weight: float
    categories: tuple[str, ...]
    stuff: tuple[str, ...]
    phrases: tuple[str, ...]  # locative phrases ("in the kitchen")
    noun_phrase: str  # "a kitchen"


SCENES: tuple[Scene, ...] = (
    Scene("street", 0.20, ("car", "man", "woman", "bicycle", "bus", "truck", "motorcycle", "dog", "bag", "bench",
                          "tree", "boy", "umbrella", "girl", "hat", "phone", "jacket", "bird", "bottle"),
          ("road", "sidewalk", "building", "sky"), ("on the street", "on a street", "in the street"), "a street"),
    Scene("park", 0.16, ("tree", "dog", "man", "woman", "bench", "boy", "girl", "ball", "bicycle", "bird", "frisbee",
                        "kite", "bush", "flower", "duck", "bag", "hat", "cat"),
          ("grass", "path", "sky"), ("in the park", "in a park"), "a park"),
    Scene("kitchen", 0.14, ("table", "cup", "bowl", "bottle", "woman", "man", "chair", "cake", "sandwich", "pizza",
                           "banana", "box", "cat", "clock", "vase", "lamp", "phone", "book", "girl"),
          ("wall", "floor", "cabinet"), ("in the kitchen", "in a kitchen"), "a kitchen"),
    Scene("living room", 0.12, ("couch", "chair", "table", "lamp", "man", "woman", "cat", "dog", "pillow", "book",
                               "laptop", "clock", "vase", "cup", "girl", "boy", "phone", "box"),
          ("wall", "floor", "window", "rug"), ("in the living room", "in a living room"), "a living room"),
    Scene("beach", 0.10, ("man", "woman", "umbrella", "dog", "boat", "ball", "boy", "girl", "bird", "kite", "hat",
                         "bag", "frisbee", "chair", "bottle", "shirt"),
          ("sand", "water", "sky"), ("on the beach", "at the beach"), "a beach"),
    Scene("field", 0.10, ("cow", "sheep", "horse", "tree", "man", "dog", "bush", "flower", "boy", "bird", "truck",
                         "girl", "duck", "ball", "bench"),
          ("grass", "sky", "fence"), ("in a field", "in the field"), "a field"),
    Scene("bedroom", 0.09, ("bed", "pillow", "lamp", "cat", "book", "chair", "woman", "man", "laptop", "clock",
                           "shirt", "jacket", "hat", "bag", "phone", "box"),
          ("wall", "floor", "window", "curtain"), ("in the bedroom", "in a bedroom"), "a bedroom"),
    Scene("office", 0.09, ("table", "chair", "laptop", "phone", "man", "woman", "book", "cup", "lamp", "clock",
                          "bag", "bottle", "box", "jacket"),
          ("wall", "floor", "window"), ("in the office", "in an office"), "an office"),
)
STUFF: tuple[str, ...] = tuple(dict.fromkeys(s for sc in SCENES for s in sc.stuff))
_STUFF_INDEX = {s: i for i, s in enumerate(STUFF)}
