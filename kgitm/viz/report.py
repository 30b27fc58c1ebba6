"""A self-contained HTML retrieval report of one run, or of several side by side.

Everything is in the one file (pictures as base64 PNG, no script, no network):

- the metrics of every protocol the run was tested with (``results_<split>.json``), with the
  diagnostic accuracies; from the similarity matrix when the run has no results file;
- R@K curves and rank histograms of both directions, from the run's ``sims_<split>.npy`` (or the
  matrix computed from its checkpoint);
- training curves from the CSV logs (``logs/metrics.csv``);
- sampled queries: the top-5 retrieved items with their scores and the true item's rank;
- the diagnostic failures: relation-swap and attribute-swap pairs the model got wrong (the swapped
  caption scored at least as high as the true one), grouped by predicate or by attribute pair, each
  with the :mod:`kgitm.viz.explain` picture of the true and of the swapped caption.

:func:`run_report` gathers one run's content (:class:`RunReport`); :func:`render_html` writes the page
of one or several runs (several: the tables and curves joined, then each run's sections in columns).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from kgitm.eval.metrics import METRIC_KEYS, evaluate_retrieval, retrieval_ranks

__all__ = ["RunReport", "render_html", "run_report", "recall_curve"]

#: the largest K of the R@K curves
MAX_K = 50
#: columns of the metrics tables, in order
_TABLE_KEYS = METRIC_KEYS


@dataclass
class RunReport:
    """What the page shows of one run (plain data; pictures as PNG bytes)."""

    name: str
    path: str
    split: str
    matcher: str
    protocols: dict[str, dict[str, Any]]
    diagnostics: dict[str, float]
    i2t_ranks: np.ndarray
    t2i_ranks: np.ndarray
    sims_source: str
    curves: dict[str, list[tuple[float, float]]]
    queries_t2i: list[dict[str, Any]] = field(default_factory=list)
    queries_i2t: list[dict[str, Any]] = field(default_factory=list)
    #: ``{set: {"wrong": {group: [pair, ...]}, "totals": {group: pairs}}}`` for relation_swap / attribute_swap
    failures: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: failures listed per group (the rest are counted)
    failures_per_group: int = 2


def recall_curve(ranks: np.ndarray, max_k: int = MAX_K) -> np.ndarray:
    """``R@K`` for ``K = 1 .. max_k`` (percent) of 0-based ranks."""
    counts = np.bincount(np.minimum(ranks, max_k), minlength=max_k + 1)[:max_k]
    return 100.0 * np.cumsum(counts) / len(ranks)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _img(png: bytes, alt: str, *, cls: str = "plot") -> str:
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def training_curves(metrics_csv: Path) -> dict[str, list[tuple[float, float]]]:
    """``{metric: [(step, value), ...]}`` of the numeric columns of a Lightning CSV log (empty cells
    skipped; ``epoch`` and ``step`` are the axes, not curves)."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    if not metrics_csv.is_file():
        return {}
    with open(metrics_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                step = float(row.get("step") or "nan")
            except ValueError:
                continue
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None):
                    continue
                try:
                    out[key].append((step, float(value)))
                except ValueError:
                    continue
    return dict(out)


def _run_name(run: Path) -> str:
    return f"{run.parent.name}/{run.name}" if run.name.startswith("seed") else run.name


def _matcher_name(run: Path) -> str:
    import yaml

    for rel in ("logs/config.yaml", "config.yaml"):
        path = run / rel
        if path.is_file():
            cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            matcher = ((cfg.get("model") or {}).get("matcher") or {}).get("class_path", "?")
            knowledge = (cfg.get("model") or {}).get("knowledge")
            name = str(matcher).rsplit(".", 1)[-1]
            return name + (" + knowledge" if knowledge else "")
    return "?"


class _Model:
    """The run's model and data (:func:`kgitm.models.run.load_run_model`, no Lightning), loaded on first
    use: only what needs them pays for them."""

    def __init__(self, run: Path, data_root: Optional[str], graph_store: Optional[str]) -> None:
        self.run, self.data_root, self.graph_store = run, data_root, graph_store
        self._loaded = None
        self._encoded = None

    def get(self):
        if self._loaded is None:
            from kgitm.models.run import load_run_model

            self._loaded = load_run_model(self.run, data_root=self.data_root, graph_store=self.graph_store)
        return self._loaded

    def encoded(self, split: str):
        if self._encoded is None:
            from kgitm.models.explain import split_encodings

            model, data = self.get()
            self._encoded = split_encodings(model, data, split)
        return self._encoded


def _sampled_queries(sims: np.ndarray, i2t: np.ndarray, t2i: np.ndarray, captions: list[str], k: int, *,
                     n: int, seed: int, top: int = 5) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    n_img, n_cap = sims.shape
    t2i_q, i2t_q = [], []
    for j in sorted(rng.choice(n_cap, size=min(n, n_cap), replace=False).tolist()):
        col = np.asarray(sims[:, j], dtype=np.float32)
        best = np.argsort(-col, kind="stable")[:top]
        t2i_q.append({"caption": j, "text": captions[j] if j < len(captions) else "", "true_image": j // k,
                      "true_rank": int(t2i[j]) + 1,
                      "top": [{"image": int(i), "score": float(col[i]), "true": int(i) == j // k} for i in best]})
    for i in sorted(rng.choice(n_img, size=min(n, n_img), replace=False).tolist()):
        row = np.asarray(sims[i], dtype=np.float32)
        best = np.argsort(-row, kind="stable")[:top]
        i2t_q.append({"image": i, "true_rank": int(i2t[i]) + 1,
                      "top": [{"caption": int(j), "text": captions[j] if j < len(captions) else "", "score": float(row[j]),
                               "true": int(j) // k == i} for j in best]})
    return t2i_q, i2t_q


def _group_of(name: str, row: dict[str, Any]) -> str:
    if name == "relation_swap" and row.get("triple"):
        return str(row["triple"][1])
    if name == "attribute_swap" and row.get("attributes"):
        return " / ".join(sorted(str(a[1]) for a in row["attributes"]))
    return "(ungrouped)"


def _failures(model: _Model, split: str, *, per_group: int, pictures: int, image_dir: Optional[Path]) -> tuple[dict, list[str]]:
    """The diagnostic pairs the model got wrong, grouped; the first ``pictures`` of them explained."""
    from kgitm.models.explain import explain_pair
    from kgitm.pipeline.diagnostics import PAIR_SETS
    from kgitm.viz.explain import draw_explanation

    net, dm = model.get()
    loaders = {n: s for n, s in dm.diagnostic_loaders().items() if s["kind"] == "pairs"} if dm.hparams.test_split == split else {}
    if not loaders:
        return {}, [f"no relation-swap / attribute-swap sets for the {split} split (SynthScenes writes them under diagnostics/)"]
    encoded = model.encoded(split)
    out: dict[str, dict[str, list[dict]]] = {}
    drawn = 0
    for name in PAIR_SETS:
        if name not in loaders:
            continue
        path = Path(dm.hparams.root) / "diagnostics" / f"{split}_{name}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        pos_img, pos = net.encode_caption_set(loaders[name]["positive"])
        _, neg = net.encode_caption_set(loaders[name]["negative"])
        s_pos = net.pair_scores(encoded.images, pos_img, pos)
        s_neg = net.pair_scores(encoded.images, pos_img, neg)
        groups: dict[str, list[dict]] = defaultdict(list)
        totals: dict[str, int] = defaultdict(int)
        for p, row in enumerate(rows):
            totals[_group_of(name, row)] += 1
            if s_pos[p] > s_neg[p]:
                continue
            groups[_group_of(name, row)].append(
                {"pair": p, "image": int(row["image"]), "positive": row["positive"], "negative": row["negative"],
                 "positive_score": float(s_pos[p]), "negative_score": float(s_neg[p]), "pictures": []})
        order = sorted(groups, key=lambda g: (-len(groups[g]), g))
        # pictures round-robin over the groups: every predicate / attribute pair gets one before any gets two
        for rank in range(per_group):
            for group in order:
                if rank < len(groups[group]) and drawn < pictures:
                    item = groups[group][rank]
                    for which in ("positive", "negative"):
                        expl = explain_pair(net, dm, split=split, image=item["image"], text=item[which], encoded=encoded,
                                            image_dir=image_dir)
                        buf = io.BytesIO()
                        draw_explanation(expl, buf, dpi=60)
                        item["pictures"].append((which, buf.getvalue()))
                    drawn += 1
        out[name] = {"wrong": {g: groups[g] for g in sorted(groups, key=lambda g: (-len(groups[g]), g))},
                     "totals": dict(totals)}
    return out, []


def run_report(
    run: str | Path,
    *,
    split: str = "test",
    queries: int = 8,
    seed: int = 0,
    failures_per_group: int = 2,
    failure_pictures: int = 12,
    image_dir: Optional[Path] = None,
    data_root: Optional[str] = None,
    graph_store: Optional[str] = None,
) -> RunReport:
    """Gather the report of one run folder.

    Args:
        run: the run folder.
        split: the evaluated split (default ``"test"``).
        queries: sampled queries per direction (default 8).
        seed: seed of the query sample.
        failures_per_group: failures listed per predicate / attribute pair (default 2).
        failure_pictures: failures explained with pictures (the true and the swapped caption), in all,
            one per group before a second in any (default 12; ``0``: none; ``-1``: no failures section,
            and the model is loaded only when the run has no similarity matrix).
        image_dir: image files for the pictures (see ``kgitm explain --image-dir``).
        data_root: the data folder when it moved since training (``data.root``).
        graph_store: the graph stores when they moved (``data.graph_store``).
    """
    run = Path(run)
    notes: list[str] = []
    model = _Model(run, data_root, graph_store)
    results_path = run / f"results_{split}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else None
    sims_path = run / f"sims_{split}.npy"
    k = 5
    if sims_path.is_file():
        sims = np.load(sims_path, mmap_mode="r")
        source = f"{sims_path.name}"
    else:
        net, _ = model.get()
        encoded = model.encoded(split)
        sims = net.similarity(encoded.images, encoded.captions).numpy()
        source = "computed from the checkpoint (no " + sims_path.name + ")"
    captions = _captions_of(run, split, model, notes)
    if captions and len(captions) != sims.shape[1]:
        notes.append(f"the split has {len(captions)} captions but the matrix {sims.shape[1]} columns: captions not shown")
        captions = []
    k = sims.shape[1] // sims.shape[0]
    i2t, t2i = retrieval_ranks(sims, k)
    if results is not None:
        protocols = dict(results.get("protocols") or {"single": results["results"]})
        diagnostics = {key: v for key, v in results["results"].items() if key not in METRIC_KEYS and isinstance(v, (int, float))}
    else:
        protocols = {"single": evaluate_retrieval(sims, k)}
        diagnostics = {}
        notes.append(f"no {results_path.name}: metrics of the single protocol from the matrix, no diagnostics (run `kgitm test`)")
    t2i_q, i2t_q = _sampled_queries(sims, i2t, t2i, captions, k, n=queries, seed=seed)
    failures: dict = {}
    if failure_pictures >= 0:
        try:
            failures, more = _failures(model, split, per_group=failures_per_group, pictures=failure_pictures, image_dir=image_dir)
            notes += more
        except Exception as err:  # noqa: BLE001 - the rest of the report stands without them
            notes.append(f"diagnostic failures not computed: {type(err).__name__}: {err}")
    return RunReport(
        name=_run_name(run), path=str(run), split=split, matcher=_matcher_name(run), protocols=protocols,
        diagnostics=diagnostics, i2t_ranks=i2t, t2i_ranks=t2i, sims_source=source,
        curves=training_curves(run / "logs" / "metrics.csv"), queries_t2i=t2i_q, queries_i2t=i2t_q,
        failures=failures, notes=notes, failures_per_group=failures_per_group,
    )


def _captions_of(run: Path, split: str, model: _Model, notes: list[str]) -> list[str]:
    """The split's captions, read from the run's data folder (its config's ``data.root``)."""
    import yaml

    from kgitm.core.io import read_lines

    for rel in ("logs/config.yaml", "config.yaml"):
        if (run / rel).is_file():
            cfg = yaml.safe_load((run / rel).read_text(encoding="utf-8")) or {}
            root = model.data_root or (cfg.get("data") or {}).get("root")
            path = Path(str(root)) / f"{split}_caps.txt"
            if path.is_file():
                return read_lines(path)
            notes.append(f"{path}: not found, captions not shown (pass --data-root)")
            return []
    return []


# ---------------------------------------------------------------------------------------- plots


def _recall_plot(reports: list[RunReport]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ks = np.arange(1, MAX_K + 1)
    for ax, direction in zip(axes, ("i2t", "t2i")):
        for rep in reports:
            ranks = rep.i2t_ranks if direction == "i2t" else rep.t2i_ranks
            ax.plot(ks, recall_curve(ranks), label=rep.name)
        ax.set_xscale("log")
        ax.set_xlabel("K")
        ax.set_ylabel("R@K (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title("image-to-text" if direction == "i2t" else "text-to-image")
        ax.legend(fontsize=7)
    return _png(fig)


def _rank_histograms(reports: list[RunReport]) -> bytes:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, direction in zip(axes, ("i2t", "t2i")):
        top = max(int((r.i2t_ranks if direction == "i2t" else r.t2i_ranks).max()) for r in reports) + 1
        bins = np.unique(np.geomspace(1, max(top, 2), 25).astype(int))
        for rep in reports:
            ranks = (rep.i2t_ranks if direction == "i2t" else rep.t2i_ranks) + 1
            ax.hist(ranks, bins=np.append(bins, bins[-1] + 1), histtype="step", label=rep.name)
        ax.set_xscale("log")
        ax.set_xlabel("rank of the true item (1 = top)")
        ax.set_ylabel("queries")
        ax.set_title("image-to-text ranks" if direction == "i2t" else "text-to-image ranks")
        ax.legend(fontsize=7)
    return _png(fig)


def _training_plot(reports: list[RunReport]) -> Optional[bytes]:
    import matplotlib.pyplot as plt

    if not any(r.curves for r in reports):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for rep in reports:
        for key, pts in sorted(rep.curves.items()):
            ax = axes[0] if key.startswith("train/") else axes[1] if key in ("val/rsum",) else None
            if ax is None or not pts:
                continue
            x, y = zip(*pts)
            ax.plot(x, y, marker="." if len(pts) < 30 else None, label=f"{rep.name} {key}" if len(reports) > 1 else key)
    axes[0].set_title("training losses")
    axes[1].set_title("validation RSUM")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "none logged (fewer steps than trainer.log_every_n_steps?)", ha="center", fontsize=8, transform=ax.transAxes)
    return _png(fig)


# ---------------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1800px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:28px}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}tr.true td{background:#e5f5e0}
.runs{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:24px}
.run{border:1px solid #ddd;padding:12px;border-radius:6px}
img.plot{max-width:100%}.pair{display:flex;gap:6px}.pair img.explain{width:50%;border:1px solid #eee}
.note{color:#8a6d3b;font-size:12px}.small{font-size:12px;color:#555}
details{margin:6px 0}summary{cursor:pointer}
"""


def _metrics_table(reports: list[RunReport]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in _TABLE_KEYS)
    rows = []
    for rep in reports:
        for protocol, m in rep.protocols.items():
            cells = "".join(f"<td>{float(m[k]):.1f}</td>" if k in m else "<td>-</td>" for k in _TABLE_KEYS)
            rows.append(f'<tr><td class="l">{html.escape(rep.name)}</td><td class="l">{html.escape(protocol)}</td>{cells}</tr>')
    table = f'<table id="metrics"><tr><th class="l">run</th><th class="l">protocol</th>{head}</tr>{"".join(rows)}</table>'
    keys = sorted({k for r in reports for k in r.diagnostics})
    if keys:
        dhead = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        drows = "".join(
            f'<tr><td class="l">{html.escape(r.name)}</td>' + "".join(
                f"<td>{r.diagnostics[k]:.1f}</td>" if k in r.diagnostics else "<td>-</td>" for k in keys) + "</tr>"
            for r in reports)
        table += f'<h3>diagnostics</h3><table id="diagnostics"><tr><th class="l">run</th>{dhead}</tr>{drows}</table>'
    return table


def _queries_html(rep: RunReport) -> str:
    parts = ["<h3>text-to-image: sampled captions, top-5 images</h3>"]
    for q in rep.queries_t2i:
        rows = "".join(
            f'<tr class="{"true" if t["true"] else ""}"><td>{n + 1}</td><td>image {t["image"]}</td><td>{t["score"]:.4f}</td></tr>'
            for n, t in enumerate(q["top"]))
        parts.append(f'<details open><summary>caption {q["caption"]}: “{html.escape(q["text"])}” (true image {q["true_image"]} '
                     f'at rank {q["true_rank"]})</summary><table class="query"><tr><th>#</th><th>retrieved</th><th>score</th></tr>{rows}</table></details>')
    parts.append("<h3>image-to-text: sampled images, top-5 captions</h3>")
    for q in rep.queries_i2t:
        rows = "".join(
            f'<tr class="{"true" if t["true"] else ""}"><td>{n + 1}</td><td class="l">{t["caption"]}: {html.escape(t["text"])}</td>'
            f'<td>{t["score"]:.4f}</td></tr>' for n, t in enumerate(q["top"]))
        parts.append(f'<details open><summary>image {q["image"]} (best true caption at rank {q["true_rank"]})</summary>'
                     f'<table class="query"><tr><th>#</th><th class="l">retrieved</th><th>score</th></tr>{rows}</table></details>')
    return "".join(parts)


def _failures_html(rep: RunReport) -> str:
    if not rep.failures:
        return ""
    parts = []
    for name, found in rep.failures.items():
        totals, wrong = found["totals"], found["wrong"]
        n_wrong = sum(len(v) for v in wrong.values())
        by = "predicate" if name == "relation_swap" else "attribute pair"
        parts.append(f'<h3>{name.replace("_", "-")}: {n_wrong} of {sum(totals.values())} pairs wrong, by {by}</h3>')
        summary = "".join(f'<tr><td class="l">{html.escape(g)}</td><td>{len(v)}</td><td>{totals.get(g, 0)}</td></tr>' for g, v in wrong.items())
        parts.append(f'<table class="failures"><tr><th class="l">{by}</th><th>wrong</th><th>pairs</th></tr>{summary}</table>')
        for g, items in wrong.items():
            for item in items[: rep.failures_per_group]:
                pics = "".join(_img(png, f"{which} caption explained", cls="explain") for which, png in item["pictures"])
                pics = f'<div class="pair">{pics}</div>' if pics else ""
                parts.append(
                    f'<details class="failure"{" open" if pics else ""}><summary>{html.escape(g)}: image {item["image"]}, '
                    f'true “{html.escape(item["positive"])}” {item["positive_score"]:.4f} vs swapped '
                    f'“{html.escape(item["negative"])}” {item["negative_score"]:.4f}</summary>{pics}</details>')
    return "".join(parts)


def _run_html(rep: RunReport) -> str:
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in rep.notes)
    return (f'<section class="run"><h2>{html.escape(rep.name)}</h2>'
            f'<p class="small">{html.escape(rep.matcher)}; run folder {html.escape(rep.path)}; split {html.escape(rep.split)}; '
            f'scores: {html.escape(rep.sims_source)}; {len(rep.i2t_ranks)} images x {len(rep.t2i_ranks)} captions</p>{notes}'
            f'{_queries_html(rep)}<h2>diagnostic failures</h2>{_failures_html(rep) or "<p>none found or none available</p>"}</section>')


def render_html(reports: list[RunReport], title: Optional[str] = None) -> str:
    """The page of one or several runs (metrics, curves, then each run's queries and failures)."""
    if not reports:
        raise ValueError("render_html needs at least one run")
    title = title or ("kgitm report: " + ", ".join(r.name for r in reports))
    training = _training_plot(reports)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>retrieval metrics</h2>", _metrics_table(reports),
        "<h2>R@K curves</h2>", _img(_recall_plot(reports), "R@K curves"),
        "<h2>rank histograms</h2>", _img(_rank_histograms(reports), "rank histograms"),
        "<h2>training curves</h2>", _img(training, "training curves") if training else "<p>no CSV logs (logs/metrics.csv)</p>",
        f'<div class="runs">{"".join(_run_html(r) for r in reports)}</div>',
    ]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{_CSS}</style></head><body>{"".join(body)}</body></html>')
