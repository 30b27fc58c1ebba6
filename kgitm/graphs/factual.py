"""Reader and writer of FACTUAL's textual scene-graph notation (Li et al., 2023).

A FACTUAL graph is a string of parenthesised tuples separated by commas::

    ( woman , hold , umbrella ) , ( umbrella , is , red ) , ( tree )

relation triples ``(subject, predicate, object)``, attribute triples with the predicate ``is``, and
bare entities ``(name)``. Elements may hold several words (``( palm tree , on side of , road )``)
and apostrophes (``( coat , is , chef 's )``). Elements are separated by ``" , "``; a tuple whose
elements are separated by commas without spaces is also read.
"""

from __future__ import annotations

import csv
from pathlib import Path

from kgitm.graphs.types import SceneGraph, SGObject

#: predicate FACTUAL uses for attributes
ATTRIBUTE_PREDICATE = "is"

FactualTuple = tuple[str, ...]


def _norm(x: str) -> str:
    return " ".join(x.split())


def _split_tuple(body: str) -> FactualTuple:
    parts = [_norm(p) for p in body.split(" , ")]
    if len(parts) not in (1, 3) or (len(parts) == 1 and "," in body):
        parts = [_norm(p) for p in body.split(",")]
    if len(parts) > 3:
        # commas inside the predicate: keep the first and last elements, join the rest
        parts = [parts[0], ", ".join(parts[1:-1]), parts[-1]]
    if len(parts) == 2:
        raise ValueError(f"FACTUAL tuple with 2 elements: ( {body.strip()} ); expected 1 or 3")
    if any(not p for p in parts):
        raise ValueError(f"FACTUAL tuple with an empty element: ( {body.strip()} )")
    return tuple(parts)


def parse_factual(s: str) -> list[FactualTuple]:
    """Parse a FACTUAL graph string into tuples of 1 (entity) or 3 (attribute/relation) elements.

    Only top-level parentheses delimit tuples; parentheses nested inside a tuple are kept as text.
    Whitespace inside elements is normalised to single spaces.

    Raises:
        ValueError: unbalanced parentheses or a tuple that is not of 1 or 3 elements.
    """
    out: list[FactualTuple] = []
    depth = 0
    start = -1
    for k, ch in enumerate(s):
        if ch == "(":
            if depth == 0:
                start = k + 1
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' at character {k} of FACTUAL graph {s!r}")
            if depth == 0:
                body = s[start:k]
                if body.strip():
                    out.append(_split_tuple(body))
    if depth != 0:
        raise ValueError(f"unbalanced '(' in FACTUAL graph {s!r}")
    return out


def factual_to_scene_graph(tuples: list[FactualTuple]) -> SceneGraph:
    """Turn FACTUAL tuples into a :class:`SceneGraph` (one object per distinct name; spans are
    ``(-1, -1)`` as FACTUAL has no token positions)."""
    index: dict[str, int] = {}
    sg = SceneGraph()

    def obj(name: str) -> int:
        if name not in index:
            index[name] = len(sg.objects)
            sg.objects.append(SGObject(name=name, span=(-1, -1)))
        return index[name]

    for t in tuples:
        if len(t) == 1:
            obj(t[0])
        elif t[1] == ATTRIBUTE_PREDICATE:
            a = (obj(t[0]), t[2])
            if a not in sg.attributes:
                sg.attributes.append(a)
        else:
            r = (obj(t[0]), t[1], obj(t[2]))
            if r not in sg.relations:
                sg.relations.append(r)
    return sg


def scene_graph_to_tuples(sg: SceneGraph) -> list[FactualTuple]:
    """Relations, then attributes (``is``), then objects mentioned by no tuple (FACTUAL's order of kinds)."""
    names = [o.name for o in sg.objects]
    out: list[FactualTuple] = []
    used: set[int] = set()
    for s, p, o in sg.relations:
        out.append((names[s], p, names[o]))
        used.update((s, o))
    for o, a in sg.attributes:
        out.append((names[o], ATTRIBUTE_PREDICATE, a))
        used.add(o)
    seen: set[str] = set()
    for k, n in enumerate(names):
        if k not in used and n not in seen:
            out.append((n,))
            seen.add(n)
    return list(dict.fromkeys(out))


def format_factual(scene_graph: SceneGraph | list[FactualTuple]) -> str:
    """Write a scene graph (or tuples) in FACTUAL notation: ``( man , ride , horse ) , ( hat )``."""
    tuples = scene_graph if isinstance(scene_graph, list) else scene_graph_to_tuples(scene_graph)
    return " , ".join("( " + " , ".join(_norm(x) for x in t) + " )" for t in tuples)


def read_factual_csv(path: str | Path) -> list[tuple[str, list[FactualTuple]]]:
    """Read a FACTUAL split (``image_id,region_id,caption,scene_graph``) as ``(caption, tuples)`` rows.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a malformed graph, with the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FACTUAL file not found: {path}")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"caption", "scene_graph"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)} (expected image_id,region_id,caption,scene_graph)")
        for row in reader:
            try:
                rows.append((row["caption"], parse_factual(row["scene_graph"])))
            except ValueError as e:
                raise ValueError(f"{path}:{reader.line_num}: {e}") from None
    return rows
