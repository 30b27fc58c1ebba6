"""Parsed-caption graphs: the contract between the text parser, the graph stores and the matchers.

All indices are 0-based positions in the project's tokenisation (:mod:`kgitm.core.text`), so word
``j`` of a dependency graph is word ``j`` of the text encoder's input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class DependencyGraph:
    """Labelled dependency edges over the caption's tokens.

    Attributes:
        tokens: the project tokens of the caption.
        edges: ``(head, dependent)`` token-index pairs.
        labels: one dependency label per edge (spaCy's label set).
    """

    tokens: list[str]
    edges: list[tuple[int, int]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


@dataclass
class SGObject:
    """An object of a textual scene graph.

    Attributes:
        name: head lemma (``"man"``).
        span: ``[start, end)`` token span of the noun phrase head (usually one token).
        plural: grammatical number of the head.
        count: explicit count when a number word is attached (``"two dogs"`` -> 2), else ``None``.
    """

    name: str
    span: tuple[int, int]
    plural: bool = False
    count: int | None = None


@dataclass
class SceneGraph:
    """A textual scene graph (SPICE/FACTUAL style).

    Attributes:
        objects: the entities.
        attributes: ``(object index, attribute lemma)`` pairs.
        relations: ``(subject index, predicate lemma, object index)`` triples; multi-word predicates
            keep their words (``"next to"``, ``"in front of"``).
    """

    objects: list[SGObject] = field(default_factory=list)
    attributes: list[tuple[int, str]] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)


@dataclass
class ParsedCaption:
    """One caption with both of its graphs."""

    caption: str
    dependency: DependencyGraph
    scene_graph: SceneGraph

    def to_json(self) -> dict:
        """Stable JSON form (lists only, keys in a fixed order)."""
        d = asdict(self)
        return {"caption": d["caption"], "dependency": d["dependency"], "scene_graph": d["scene_graph"]}

    @classmethod
    def from_json(cls, d: dict) -> "ParsedCaption":
        dep = d["dependency"]
        sg = d["scene_graph"]
        return cls(
            caption=d["caption"],
            dependency=DependencyGraph(
                tokens=list(dep["tokens"]),
                edges=[tuple(e) for e in dep["edges"]],
                labels=list(dep["labels"]),
            ),
            scene_graph=SceneGraph(
                objects=[
                    SGObject(name=o["name"], span=tuple(o["span"]), plural=o["plural"], count=o["count"])
                    for o in sg["objects"]
                ],
                attributes=[tuple(a) for a in sg["attributes"]],
                relations=[tuple(r) for r in sg["relations"]],
            ),
        )


# networkx views (here, not in the parser: drawing a stored graph must not import spaCy)


def dependency_to_networkx(parsed: ParsedCaption):
    """``nx.DiGraph``: nodes are token indices (attribute ``word``), edges head -> dependent
    (attribute ``label``)."""
    import networkx as nx

    g = nx.DiGraph()
    for i, w in enumerate(parsed.dependency.tokens):
        g.add_node(i, word=w)
    for (h, d), lab in zip(parsed.dependency.edges, parsed.dependency.labels):
        g.add_edge(h, d, label=lab)
    return g


def scene_graph_to_networkx(parsed: ParsedCaption | SceneGraph):
    """``nx.DiGraph`` of a scene graph with typed nodes (all attributes GraphML-serialisable).

    Nodes: ``"o{k}"`` objects (``kind="object"``, ``label`` = name, ``span``, ``plural``, ``count``
    (-1 when none)); ``"a{k}"`` attributes (``kind="attribute"``, ``label``) with an edge object ->
    attribute (``label="attr"``); ``"r{k}"`` relation nodes (``kind="relation"``, ``label`` =
    predicate) with edges subject -> relation (``label="subj"``) and relation -> object
    (``label="obj"``), so parallel relations between one pair stay distinct.
    """
    import networkx as nx

    sg = parsed.scene_graph if isinstance(parsed, ParsedCaption) else parsed
    g = nx.DiGraph()
    for k, o in enumerate(sg.objects):
        g.add_node(f"o{k}", kind="object", label=o.name, span=f"{o.span[0]}:{o.span[1]}",
                   plural=int(o.plural), count=-1 if o.count is None else int(o.count))
    for k, (o, a) in enumerate(sg.attributes):
        g.add_node(f"a{k}", kind="attribute", label=a)
        g.add_edge(f"o{o}", f"a{k}", label="attr")
    for k, (s, p, o) in enumerate(sg.relations):
        g.add_node(f"r{k}", kind="relation", label=p)
        g.add_edge(f"o{s}", f"r{k}", label="subj")
        g.add_edge(f"r{k}", f"o{o}", label="obj")
    return g
