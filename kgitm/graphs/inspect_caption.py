"""One parsed caption for people: its two graphs as text (:func:`describe`), as a drawing (:func:`draw`)
and as GraphML (:func:`to_graphml`, node ids prefixed ``sg:`` and ``dep:``). ``kgitm inspect-caption``
(:mod:`kgitm.cli.inspect_caption`) parses a caption and calls all three."""

from __future__ import annotations

from pathlib import Path

from kgitm.core.io import savefig_atomic
from kgitm.graphs.factual import format_factual
from kgitm.graphs.types import ParsedCaption, dependency_to_networkx, scene_graph_to_networkx


def describe(parsed: ParsedCaption) -> str:
    """Readable multi-line text of both graphs."""
    dep, sg = parsed.dependency, parsed.scene_graph
    lines = [f"caption: {parsed.caption}", "tokens:  " + " ".join(f"{i}:{t}" for i, t in enumerate(dep.tokens)),
             "dependency edges (head -label-> dependent):"]
    lines += [f"  {dep.tokens[h]}[{h}] -{lab}-> {dep.tokens[d]}[{d}]" for (h, d), lab in zip(dep.edges, dep.labels)]
    lines.append("scene graph objects:")
    for k, o in enumerate(sg.objects):
        extra = (" plural" if o.plural else "") + (f" count={o.count}" if o.count is not None else "")
        lines.append(f"  [{k}] {o.name}  tokens {o.span[0]}:{o.span[1]}{extra}")
    lines.append("attributes:")
    lines += [f"  {sg.objects[o].name}[{o}] is {a}" for o, a in sg.attributes]
    lines.append("relations:")
    lines += [f"  {sg.objects[s].name}[{s}] --{p}--> {sg.objects[o].name}[{o}]" for s, p, o in sg.relations]
    lines.append("FACTUAL: " + format_factual(sg))
    return "\n".join(lines)


def draw(parsed: ParsedCaption, path: Path) -> None:
    """Draw the scene graph (left) and the dependency graph (right) to ``path`` (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    sg = scene_graph_to_networkx(parsed)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    colors = {"object": "#9ecae1", "attribute": "#a1d99b", "relation": "#fdae6b"}
    ax = axes[0]
    ax.set_title("scene graph")
    if sg.number_of_nodes():
        pos = nx.spring_layout(sg, seed=0)
        nx.draw_networkx(sg, pos, ax=ax, labels={n: d["label"] for n, d in sg.nodes(data=True)},
                         node_color=[colors[d["kind"]] for _, d in sg.nodes(data=True)], node_size=900, font_size=8)
    ax.axis("off")
    ax = axes[1]
    ax.set_title("dependency graph (arcs head -> dependent)")
    dep = parsed.dependency
    draw_dependency_arcs(ax, list(dep.tokens), [tuple(e) for e in dep.edges], list(dep.labels))
    fig.suptitle(parsed.caption[:120])
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=100)
    plt.close(fig)


def draw_dependency_arcs(ax, tokens: list[str], edges: list[tuple[int, int]], labels: list[str]) -> None:
    """The words on a line with one labelled arc per dependency edge (head -> dependent) on ``ax``;
    ``kgitm inspect-caption`` and ``kgitm explain`` draw captions with it."""
    from matplotlib.patches import FancyArrowPatch

    n = len(tokens)
    for i, word in enumerate(tokens):
        ax.text(i, 0, word, ha="center", va="top", fontsize=9, rotation=45 if n > 12 else 0)
    top = 1.0
    for (h, d), lab in zip(edges, labels):
        # quadratic arc through a control point at 60 degrees: its top is at 0.433 * |h - d|
        height = 0.433 * abs(h - d) + 0.05
        top = max(top, height + 0.4)
        style = f"angle3,angleA={60 if d > h else 120},angleB={120 if d > h else 60}"
        ax.add_patch(FancyArrowPatch((h, 0.05), (d, 0.05), connectionstyle=style, arrowstyle="-|>",
                                     mutation_scale=8, color="#555555", lw=0.8))
        ax.text((h + d) / 2, height + 0.03, lab, ha="center", fontsize=7, color="#08519c")
    ax.set_xlim(-1, max(n, 1))
    ax.set_ylim(-1.5, top)
    ax.set_aspect("equal")  # arcs are drawn in data units
    ax.axis("off")


def to_graphml(parsed: ParsedCaption, path: Path) -> None:
    """Write both graphs as one GraphML file (node attribute ``graph`` = ``scene``/``dependency``)."""
    import networkx as nx

    g = nx.DiGraph(caption=parsed.caption)
    for n, d in scene_graph_to_networkx(parsed).nodes(data=True):
        g.add_node(f"sg:{n}", graph="scene", **d)
    for u, v, d in scene_graph_to_networkx(parsed).edges(data=True):
        g.add_edge(f"sg:{u}", f"sg:{v}", **d)
    for n, d in dependency_to_networkx(parsed).nodes(data=True):
        g.add_node(f"dep:{n}", graph="dependency", kind="token", label=d["word"], index=int(n))
    for u, v, d in dependency_to_networkx(parsed).edges(data=True):
        g.add_edge(f"dep:{u}", f"dep:{v}", **d)
    nx.write_graphml(g, path)
