"""Draw kgitm's layers from its import graph, and check that no import runs backwards.

Reads every module of ``kgitm/`` with :mod:`ast` (nothing is imported or run), maps each
``import kgitm.X...`` to the layer ``X``, and draws one box per layer (in pipeline order, with its
modules) and one arrow per pair of layers where one imports the other, thicker for more import
statements. An import from a later layer into an earlier one is drawn red and makes the script exit
with status 1 (``tests/test_architecture.py`` runs the same check).

    python scripts/draw_architecture.py --out docs/architecture.png
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the layers in pipeline order; a layer may import the ones before it, never the ones after
LAYERS = ("core", "data", "graphs", "knowledge", "pipeline", "encoders", "matchers", "eval", "models", "lit", "convert", "cli")


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "kgitm" and parts[1] in LAYERS else None


def import_graph(package: Path = REPO / "kgitm") -> tuple[Counter, dict[str, list[str]], list[str]]:
    """``(edges, modules, backward)``: import statements per ``(from_layer, to_layer)``, the modules of
    each layer, and a line per backward import (``file:line layer -> module``)."""
    edges: Counter = Counter()
    modules: dict[str, list[str]] = defaultdict(list)
    backward: list[str] = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        src = layer_of(name)
        if src is None:
            continue
        if rel.name != "__init__":
            modules[src].append(".".join(rel.parts[2:]))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            for t in targets:
                dst = layer_of(t)
                if dst is None or dst == src:
                    continue
                edges[(src, dst)] += 1
                if LAYERS.index(dst) > LAYERS.index(src):
                    backward.append(f"{path.relative_to(REPO)}:{node.lineno} {src} -> {t}")
    return edges, modules, backward


def draw(edges: Counter, modules: dict[str, list[str]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    sys.path.insert(0, str(REPO))
    from kgitm.core.io import savefig_atomic

    n = len(LAYERS)
    fig, ax = plt.subplots(figsize=(16, 9.5))
    width, gap = 1.25, 0.18
    xs = {layer: i * (width + gap) for i, layer in enumerate(LAYERS)}
    top, box_h = 7.6, 3.4
    for layer in LAYERS:
        x = xs[layer]
        ax.add_patch(FancyBboxPatch((x, top - box_h), width, box_h, boxstyle="round,pad=0.02", fc="#eef3fb", ec="#4a6fa5"))
        ax.text(x + width / 2, top - 0.25, layer, ha="center", va="top", fontsize=11, weight="bold")
        names = sorted(modules.get(layer, []))
        for k, m in enumerate(names[:16]):
            ax.text(x + 0.06, top - 0.6 - k * 0.175, m, ha="left", va="top", fontsize=6.2, family="monospace")
    # arrows below the boxes: from a layer down to the layers it imports, arcs by distance
    for (src, dst), count in sorted(edges.items(), key=lambda kv: (LAYERS.index(kv[0][0]), LAYERS.index(kv[0][1]))):
        i, j = LAYERS.index(src), LAYERS.index(dst)
        x0, x1 = xs[src] + width / 2, xs[dst] + width / 2
        y = top - box_h - 0.05
        bad = j > i
        rad = -0.3 if not bad else 0.3  # arcs below the boxes (backward ones above)
        arc = FancyArrowPatch((x0, y), (x1, y), connectionstyle=f"arc3,rad={rad}",
                              arrowstyle="-|>", mutation_scale=9, lw=0.4 + 0.12 * min(count, 12),
                              color="#c0392b" if bad else "#7f8c8d", alpha=0.75)
        ax.add_patch(arc)
    ax.set_xlim(-0.2, n * (width + gap))
    ax.set_ylim(top - box_h - 0.15 * n * (width + gap) - 0.4, top + 0.3)
    ax.axis("off")
    ax.set_title("kgitm layers in pipeline order: each imports only layers to its left\n"
                 "(an arrow from a layer to one it imports, thicker for more import statements; red would run backwards)",
                 fontsize=10)
    fig.tight_layout()
    savefig_atomic(fig, out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="write the picture here (PNG); default: check only")
    args = ap.parse_args(argv)
    edges, modules, backward = import_graph()
    if args.out:
        draw(edges, modules, args.out)
        print(f"wrote {args.out}")
    for line in backward:
        print(f"backward import: {line}", file=sys.stderr)
    print(f"{sum(edges.values())} imports between {len(LAYERS)} layers; {len(backward)} backward")
    return 1 if backward else 0


if __name__ == "__main__":
    raise SystemExit(main())
