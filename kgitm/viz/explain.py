"""The alignment picture of one explained pair (:func:`kgitm.models.explain.explain_pair`).

Rows, each drawn when the explanation has what it shows:

1. the image (its file, or a canvas of its size) with the region boxes, every word linked to its
   strongest regions (box colour: the word attending to it most), and the word x region attention
   as a heat map (SCAN, GSMN; SGRAF-style matchers through the same ``word_region_attention`` key);
2. GSMN: node-level matching and structure-level node scores per word and per region;
3. SGM: the textual and the visual scene graph with their object and relation correspondences;
4. the dependency graph and the visual graph side by side;
5. the knowledge concepts that fired.

The title holds the score and the pair's ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Optional

import numpy as np

from kgitm.core.io import savefig_atomic

__all__ = ["draw_explanation", "word_region_attention"]

_CANVAS = "#f2f2f2"
_BOX = "#777777"


def word_region_attention(expl: dict[str, Any]) -> tuple[Optional[np.ndarray], str]:
    """The ``(L, R)`` attention to draw, and what it is: words over regions when the matcher has it,
    else regions over words (transposed)."""
    al = expl["alignments"]
    if "word_region_attention" in al:
        return np.asarray(al["word_region_attention"], dtype=np.float64), "attention of each word over the regions"
    if "region_word_attention" in al:
        return np.asarray(al["region_word_attention"], dtype=np.float64).T, "attention of each region over the words"
    return None, ""


def _region_name(region: dict[str, Any]) -> str:
    return f"r{region['index']}" + (f" {region['label']}" if region.get("label") else "")


def _centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _image_panel(ax, expl: dict[str, Any], att: Optional[np.ndarray], colors, *, links: int = 2) -> None:
    w, h = expl["image_size"]
    if expl.get("image_file"):
        import matplotlib.image as mpimg

        ax.imshow(mpimg.imread(expl["image_file"]), extent=(0, w, h, 0))
    else:
        ax.add_patch(_rect((0, 0, w, h), face=_CANVAS, edge="#bbbbbb", lw=1))
    regions = [r for r in expl["regions"] if r["valid"]]
    words = expl["words"]
    strongest = att.argmax(0) if att is not None and att.size else None
    for reg in regions:
        i = reg["index"]
        if strongest is not None:
            colour, weight = colors[strongest[i] % len(colors)], float(att[:, i].max())
        else:
            colour, weight = _BOX, 0.5
        ax.add_patch(_rect(reg["box"], face="none", edge=colour, lw=0.8 + 3.0 * weight))
        ax.text(reg["box"][0] + 2, reg["box"][1] + 2, _region_name(reg), fontsize=7, va="top", color=colour,
                bbox=dict(facecolor="white", alpha=0.6, lw=0, pad=0.5))
    x_words = w * 1.04
    for j, word in enumerate(words):
        y = h * (j + 0.5) / max(len(words), 1)
        colour = colors[j % len(colors)]
        ax.text(x_words, y, word, fontsize=9, va="center", color=colour, fontweight="bold")
        if att is None:
            continue
        for i in np.argsort(-att[j], kind="stable")[:links]:
            reg = expl["regions"][int(i)]
            if not reg["valid"]:
                continue
            cx, cy = _centre(reg["box"])
            ax.plot([x_words, cx], [y, cy], color=colour, alpha=float(0.15 + 0.85 * att[j, i]), lw=0.6 + 2.0 * float(att[j, i]))
    ax.set_xlim(0, w * 1.3)
    ax.set_ylim(h, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("regions and words (links: each word's top regions)" if att is not None else "regions", fontsize=10)


def _rect(box, *, face: str, edge: str, lw: float):
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = box
    return Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=face, edgecolor=edge, lw=lw)


def _heatmap(ax, expl: dict[str, Any], att: Optional[np.ndarray], what: str) -> None:
    if att is None:
        ax.axis("off")
        why = ("it matches scene-graph nodes: see the correspondences below" if "object_similarity" in expl["alignments"]
               else "the score compares pooled vectors")
        ax.text(0.5, 0.5, f"{expl['matcher']}: no word-region attention\n({why})",
                ha="center", va="center", fontsize=10, transform=ax.transAxes)
        return
    valid = [r["index"] for r in expl["regions"] if r["valid"]]
    shown = att[:, valid]
    im = ax.imshow(shown, cmap="viridis", aspect="auto", vmin=0.0, vmax=max(float(shown.max()), 1e-6))
    ax.set_yticks(range(len(expl["words"])), expl["words"], fontsize=8)
    ax.set_xticks(range(len(valid)), [_region_name(expl["regions"][i]) for i in valid], fontsize=7, rotation=60, ha="right")
    if shown.size <= 400:
        for (j, i), v in np.ndenumerate(shown):
            ax.text(i, j, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 * shown.max() else "black")
    ax.figure.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title(what, fontsize=10)


def _bars(ax, labels: list[str], series: list[tuple[str, list[float]]], title: str) -> None:
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    ax.axhline(0, color="#999999", lw=0.6)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)


def _gsmn_row(axes, expl: dict[str, Any]) -> None:
    al = expl["alignments"]
    valid = [r["index"] for r in expl["regions"] if r["valid"]]
    _bars(axes[0], expl["words"], [("node-level match (mean block cosine)", al["word_node_match"]),
                                   ("structure-level node score", al["word_score"])],
          f"GSMN per word (text-to-image {al['t2i_score']:.3f})")
    _bars(axes[1], [_region_name(expl["regions"][i]) for i in valid],
          [("node-level match (mean block cosine)", [al["region_node_match"][i] for i in valid]),
           ("structure-level node score", [al["region_score"][i] for i in valid])],
          f"GSMN per region (image-to-text {al['i2t_score']:.3f})")


def _sgm_row(ax, expl: dict[str, Any]) -> None:
    """Text graph on the left (objects, then relations), visual graph on the right (relations, then
    objects); a line joins each text node to its best visual node, coloured by their similarity."""
    import matplotlib

    al = expl["alignments"]
    text = expl.get("sgm_text_graph") or {"objects": [], "relations": []}
    visual = (expl.get("visual_scene_graph") or {}).get("slots") or {"objects": [], "relations": []}
    vnames = (expl.get("visual_scene_graph") or {}).get("objects", [])

    def vobj(k: int) -> str:
        return vnames[k] if k < len(vnames) else f"r{visual['objects'][k]}"

    columns = {
        "t_obj": (0.0, text["objects"]),
        "t_rel": (1.0, [f"{text['objects'][s]} {p} {text['objects'][o]}" for s, p, o in text["relations"]]),
        "v_rel": (2.2, [f"{vobj(s)} {p} {vobj(o)}" for s, p, o in visual["relations"]]),
        "v_obj": (3.2, [f"{vobj(k)} (r{r})" for k, r in enumerate(visual["objects"])]),
    }
    pos: dict[tuple[str, int], tuple[float, float]] = {}
    for key, (x, names) in columns.items():
        for k, name in enumerate(names):
            y = -(k + 0.5) / max(len(names), 1)
            pos[key, k] = (x, y)
            colour = "#9ecae1" if key.endswith("obj") else "#fdae6b"
            ax.text(x, y, name, ha="center", va="center", fontsize=8, bbox=dict(facecolor=colour, lw=0.5, boxstyle="round"))
    for side, rels in (("t", text["relations"]), ("v", visual["relations"])):
        for t, (s, _, o) in enumerate(rels):
            for k in (s, o):
                if (f"{side}_obj", k) in pos:
                    (x0, y0), (x1, y1) = pos[f"{side}_rel", t], pos[f"{side}_obj", k]
                    ax.plot([x0, x1], [y0, y1], color="#cccccc", lw=0.8, zorder=0)
    cmap = matplotlib.colormaps["coolwarm"]
    for level, t_key, v_key in (("object", "t_obj", "v_obj"), ("relation", "t_rel", "v_rel")):
        sim, match = np.asarray(al[f"{level}_similarity"]), al[f"{level}_match"]
        for t in range(len(columns[t_key][1])):
            v = int(match[t])
            if (v_key, v) not in pos:
                continue
            (x0, y0), (x1, y1) = pos[t_key, t], pos[v_key, v]
            value = float(sim[t, v])
            rad = -0.25 if level == "object" else 0.0
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle="-", color=cmap((value + 1) / 2), lw=1.5, connectionstyle=f"arc3,rad={rad}"))
            ax.text(x1 - 0.32, y1, f"{value:.2f}", fontsize=7, ha="center", va="center", color=cmap((value + 1) / 2))
    ax.set_xlim(-0.6, 3.8)
    ax.set_ylim(-1.05, 0.05)
    ax.axis("off")
    ax.set_title(
        f"SGM correspondences: objects {al['object_score']:.3f}, relations {al['relation_score']:.3f} "
        "(left: caption's scene graph; right: image's)", fontsize=10,
    )


def _graphs_row(axes, expl: dict[str, Any]) -> None:
    from kgitm.graphs.inspect_caption import draw_dependency_arcs

    dep = expl.get("dependency")
    if dep is not None:
        draw_dependency_arcs(axes[0], dep["tokens"], [tuple(e) for e in dep["edges"]], dep["labels"])
        axes[0].set_title("dependency graph (arcs head -> dependent)", fontsize=10)
    else:
        axes[0].axis("off")
        axes[0].text(0.5, 0.5, "no dependency graph (no graph store, no spaCy model)", ha="center", transform=axes[0].transAxes)
    ax = axes[1]
    w, h = expl["image_size"]
    ax.add_patch(_rect((0, 0, w, h), face=_CANVAS, edge="#bbbbbb", lw=1))
    regions = {r["index"]: r for r in expl["regions"] if r["valid"]}
    for reg in regions.values():
        cx, cy = _centre(reg["box"])
        ax.plot(cx, cy, "o", color="#3182bd", ms=5)
        ax.text(cx, cy, " " + _region_name(reg), fontsize=7)
    vis = expl.get("visual_scene_graph")
    if vis is not None and vis["relations"]:
        for s, p, o in vis["relations"]:
            rs, ro = vis["object_region"][s], vis["object_region"][o]
            if rs in regions and ro in regions:
                (x0, y0), (x1, y1) = _centre(regions[rs]["box"]), _centre(regions[ro]["box"])
                ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="-|>", color="#e6550d", lw=1.2))
                ax.text((x0 + x1) / 2, (y0 + y1) / 2, p, fontsize=8, color="#a63603", ha="center")
        ax.set_title("visual scene graph (subject -> object)", fontsize=10)
    else:  # GSMN's visual graph: fully connected over the regions
        centres = [_centre(r["box"]) for r in regions.values()]
        for a in range(len(centres)):
            for b in range(a + 1, len(centres)):
                ax.plot([centres[a][0], centres[b][0]], [centres[a][1], centres[b][1]], color="#bbbbbb", lw=0.4, zorder=0)
        ax.set_title("visual graph (regions, fully connected)", fontsize=10)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_aspect("equal")
    ax.axis("off")


def _concepts_text(expl: dict[str, Any]) -> str:
    c = expl["concepts"]
    lines = ["knowledge concepts that fired"]
    if c["words"]:
        lines.append("words: " + "; ".join(f"{w['word']} -> {', '.join(w['concepts'])}" for w in c["words"]))
    if c["regions"]:
        lines.append("regions: " + "; ".join(
            f"r{r['region']} -> " + ", ".join(f"{n} {v:.2f}" for n, v in r["concepts"][:2]) for r in c["regions"][:12]))
    for key, name in (("image_consensus", "image consensus"), ("caption_consensus", "caption consensus")):
        if c.get(key):
            lines.append(f"{name}: " + ", ".join(f"{n} {v:.2f}" for n, v in c[key]))
    return "\n".join(_wrap(line) for line in lines)


def _wrap(line: str, width: int = 170) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(line, width)) or line


def draw_explanation(expl: dict[str, Any], path: str | Path | IO[bytes], *, dpi: int = 90) -> Any:
    """Draw the picture of ``expl`` (:func:`kgitm.models.explain.explain_pair`) to ``path`` (a PNG file,
    or a binary file object such as ``io.BytesIO``); returns ``path``."""
    import matplotlib
    from matplotlib.figure import Figure  # not pyplot: no global figure manager, and a faster import

    al = expl["alignments"]
    rows = ["alignment"]
    if "word_score" in al:
        rows.append("gsmn")
    if "object_similarity" in al:
        rows.append("sgm")
    rows.append("graphs")
    if expl.get("concepts"):
        rows.append("concepts")
    heights = {"alignment": 5.0, "gsmn": 3.2, "sgm": 3.6, "graphs": 3.6, "concepts": 1.2}
    fig = Figure(figsize=(15, sum(heights[r] for r in rows) + 0.8))
    grid = fig.add_gridspec(len(rows), 2, height_ratios=[heights[r] for r in rows], width_ratios=[1.15, 1])
    colors = [matplotlib.colormaps["tab10"](k) for k in range(10)]
    att, what = word_region_attention(expl)
    for n, row in enumerate(rows):
        if row == "alignment":
            _image_panel(fig.add_subplot(grid[n, 0]), expl, att, colors)
            _heatmap(fig.add_subplot(grid[n, 1]), expl, att, what)
        elif row == "gsmn":
            _gsmn_row([fig.add_subplot(grid[n, 0]), fig.add_subplot(grid[n, 1])], expl)
        elif row == "sgm":
            _sgm_row(fig.add_subplot(grid[n, :]), expl)
        elif row == "graphs":
            _graphs_row([fig.add_subplot(grid[n, 0]), fig.add_subplot(grid[n, 1])], expl)
        else:
            ax = fig.add_subplot(grid[n, :])
            ax.axis("off")
            ax.text(0, 1, _concepts_text(expl), va="top", fontsize=8, family="monospace", transform=ax.transAxes)
    r = expl["ranks"]
    who = expl["matcher"] + (f" + {expl['fused']}" if expl.get("fused") else "")
    fig.suptitle(
        f"{who}: image {expl['image']} ({expl.get('image_id') or '-'}) x \"{expl['text'][:90]}\"\n"
        f"score {expl['score']:.4f}; the image ranks {r['image_among_images']}/{r['num_images']} for this caption, "
        f"the caption ranks {r['caption_among_captions']}/{r['num_captions']} for this image",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    if hasattr(path, "write"):
        fig.savefig(path, format="png", dpi=dpi)
    else:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        savefig_atomic(fig, path, dpi=dpi)
    return path
