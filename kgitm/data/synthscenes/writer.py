"""Writing a SynthScenes folder: per split the region features, boxes, image sizes, captions, ids,
the ground-truth scene-graph JSON and the simulated generator's predicted ones, the diagnostic files of
the dev and test splits and ``meta.json``; :func:`generate` does it
atomically, :func:`read_meta` and :func:`is_up_to_date` read a folder back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from .captions import _Captioner, _fix_commas, render_caption
from .config import GENERATOR_VERSION, SPLITS, SynthScenesConfig, make_config
from .diagnostics import DIAGNOSTIC_SPLITS, _attribute_swap, _relation_swap, paraphrase_nouns
from .features import _SLOTS, RegionLayout, _prototypes, _render_features, region_layout
from .layout import SceneLayout, _Sampler
from .ontology import ATTRIBUTE_GROUPS, ATTRIBUTES, CATEGORIES, PARAPHRASES, PARAPHRASES_WORDNET, PREDICATES, SCENES, STUFF
from .predicted import ORACLE_FILE, PREDICTED_FILE, SGG_PRESETS, predict_scene_graphs, predicted_meta

log = logging.getLogger(__name__)

_PROGRESS_MIN_IMAGES = 2000  # splits smaller than this generate in about a second: no progress bar
_FEATURE_CHUNK = 512  # images per feature-synthesis chunk (fixed: part of the determinism contract)


def _scene_graph(img: SceneLayout, image_id: str, boxes_px: np.ndarray, regions: RegionLayout) -> dict:
    objects = []
    for k, ob in enumerate(img.objects):
        x1, y1, x2, y2 = (float(v) for v in boxes_px[regions.object_region[k]])
        objects.append({
            "object_id": k, "names": [CATEGORIES[ob.category].name],
            "attributes": [ATTRIBUTES[a] for a in ob.attributes],
            "x": int(round(x1)), "y": int(round(y1)), "w": int(round(x2 - x1)), "h": int(round(y2 - y1)),
            "region_index": regions.object_region[k],
        })
    rels = [{"relationship_id": n, "subject_id": s, "object_id": o, "predicate": PREDICATES[p].name}
            for n, (s, p, o) in enumerate(img.relations)]
    return {"image_id": image_id, "width": img.width, "height": img.height, "objects": objects, "relationships": rels}


def _write_split(out: Path, split: str, n: int, cfg: SynthScenesConfig, protos: np.ndarray, sampler: "_Sampler",
                 layout_rng: np.random.Generator, feature_rng: np.random.Generator, diagnostic_rng: np.random.Generator,
                 predicted_rngs: dict[str, np.random.Generator], progress: bool) -> dict:
    from tqdm.auto import tqdm

    cap = _Captioner(cfg)
    R, k = cfg.regions, cfg.captions_per_image
    rows = np.empty((n, R, _SLOTS), dtype=np.int64)
    weights = np.empty((n, R, _SLOTS), dtype=np.float32)
    noise = np.empty((n, R), dtype=np.float32)
    bbx = np.empty((n, R, 4), dtype=np.float32)
    sizes = np.empty((n, 2), dtype=np.float32)
    captions, shift_captions, ids, graphs, rel_swap, attr_swap = [], [], [], [], [], []
    paraphrased: dict[str, list[str]] = {"wordnet": [], "other": []}
    nouns = {kind: paraphrase_nouns(kind == "wordnet") for kind in paraphrased}
    # the test split's pairs draw from the layout stream (as they always did: its files keep their
    # bytes); the dev split's from a stream of their own, so that dev's images and captions are
    # unchanged by having diagnostics
    swap_rng = layout_rng if split == "test" else diagnostic_rng
    layouts, region_layouts = [], []
    pred_counts = np.zeros(len(PREDICATES), dtype=np.int64)
    for i in tqdm(range(n), desc=f"synthscenes {split}", disable=not progress or n < _PROGRESS_MIN_IMAGES, leave=False):
        img = sampler.layout(layout_rng)
        reg = region_layout(img, cfg, layout_rng)
        scale = np.array([img.width, img.height, img.width, img.height], dtype=np.float64)
        rows[i], weights[i], noise[i] = reg.rows, reg.weights, reg.noise
        bbx[i] = (reg.boxes * scale).astype(np.float32)
        sizes[i] = (img.width, img.height)
        image_id = f"synth_{split}_{i:06d}"
        ids.append(image_id)
        graphs.append(_scene_graph(img, image_id, bbx[i], reg))
        layouts.append(img)
        region_layouts.append(reg)
        for _, p, _ in img.relations:
            pred_counts[p] += 1
        pieces = cap.captions(img, layout_rng)
        first = len(captions)
        captions += [_fix_commas(render_caption(c)) for c in pieces]
        if split in DIAGNOSTIC_SPLITS:
            shift_captions += [_fix_commas(render_caption(c, shift=True)) for c in pieces]
            for kind in paraphrased:
                paraphrased[kind] += [_fix_commas(render_caption(c, nouns=nouns[kind], pick=first + j))
                                      for j, c in enumerate(pieces)]
            rs = _relation_swap(img, cap, swap_rng)
            if rs:
                rel_swap.append({"image": i, "positive": rs[0], "negative": rs[1], "triple": rs[2]})
            at = _attribute_swap(img, cap, swap_rng)
            if at:
                attr_swap.append({"image": i, "positive": at[0], "negative": at[1], "attributes": at[2]})
    assert len(captions) == k * n

    ims = np.lib.format.open_memmap(out / f"{split}_ims.npy", mode="w+", dtype=np.float32, shape=(n, R, cfg.feature_dim))
    for a in range(0, n, _FEATURE_CHUNK):
        b = min(n, a + _FEATURE_CHUNK)
        ims[a:b] = _render_features(rows[a:b], weights[a:b], noise[a:b], protos, cfg, feature_rng)
    ims.flush()
    del ims
    np.save(out / f"{split}_ims_bbx.npy", bbx)
    np.save(out / f"{split}_ims_size.npy", sizes)
    (out / f"{split}_caps.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    (out / f"{split}_ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    with open(out / ORACLE_FILE.format(split=split), "w", encoding="utf-8") as f:
        json.dump(graphs, f, separators=(",", ":"))
    for preset, rng in predicted_rngs.items():
        predicted = predict_scene_graphs(layouts, region_layouts, bbx, protos, cfg, SGG_PRESETS[preset], rng, ids)
        (out / PREDICTED_FILE.format(split=split, preset=preset)).write_text(
            json.dumps(predicted, separators=(",", ":")), encoding="utf-8")
    stats = {"images": n, "captions": len(captions),
             "relations": {PREDICATES[j].name: int(c) for j, c in enumerate(pred_counts)}}
    if split in DIAGNOSTIC_SPLITS:
        diag = out / "diagnostics"
        diag.mkdir(exist_ok=True)
        for name, items in (("relation_swap", rel_swap), ("attribute_swap", attr_swap)):
            with open(diag / f"{split}_{name}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(x) + "\n" for x in items)
            # the same captions as plain caption files (line p = pair p), so that the graph
            # preprocessing job parses them like any split: `--splits diagnostics/test_relation_swap_positive`
            for side in ("positive", "negative"):
                (diag / f"{split}_{name}_{side}_caps.txt").write_text(
                    "".join(x[side] + "\n" for x in items), encoding="utf-8"
                )
        (diag / f"{split}_synonym_shift_caps.txt").write_text("\n".join(shift_captions) + "\n", encoding="utf-8")
        for kind, lines in paraphrased.items():
            (diag / f"{split}_paraphrase_{kind}_caps.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        stats["diagnostics"] = {
            "relation_swap": len(rel_swap), "attribute_swap": len(attr_swap),
            "synonym_shift_captions": len(shift_captions),
            "synonym_shift_changed": sum(a != b for a, b in zip(captions, shift_captions)),
            **{f"paraphrase_{kind}_changed": sum(a != b for a, b in zip(captions, lines)) for kind, lines in paraphrased.items()},
        }
    return stats


def _vocabulary() -> dict:
    return {
        "categories": [{"name": c.name, "kind": c.kind, "train_words": list(c.train_words),
                        "attributes": list(c.attributes)} for c in CATEGORIES],
        "attributes": [{"name": a, "group": g} for a, g in ATTRIBUTE_GROUPS.items()],
        "relations": [{"name": p.name, "type": "semantic" if p.semantic else "spatial", "symmetric": p.symmetric,
                       "converse_of": None if not p.inverse else next(q.name for q in PREDICATES if q.geometry == p.geometry and not q.inverse),
                       "surface": list(p.surface)} for p in PREDICATES],
        "scenes": [{"name": s.name, "weight": s.weight, "categories": list(s.categories), "stuff": list(s.stuff),
                    "phrases": list(s.phrases)} for s in SCENES],
        "stuff": list(STUFF),
        "synonym_table": [{"concept": c.name, "train_words": list(c.train_words), "shift_words": [c.shift_word],
                           "wordnet_relation": c.shift_relation} for c in CATEGORIES if c.shift_word],
        "paraphrase_table": [{"concept": name, "paraphrases": list(words),
                              "wordnet_reached": [w for w in words if w in PARAPHRASES_WORDNET]}
                             for name, words in PARAPHRASES.items()],
    }


def _config_record(cfg: SynthScenesConfig) -> dict:
    return {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(cfg)}


def read_meta(root: str | Path) -> dict | None:
    """``root/meta.json`` as a dict, or ``None`` when the folder holds no complete data set."""
    path = Path(root) / "meta.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def is_up_to_date(root: str | Path, cfg: SynthScenesConfig) -> bool:
    """Whether ``root`` already holds a complete data set generated with exactly ``cfg``."""
    meta = read_meta(root)
    return meta is not None and meta.get("config") == _config_record(cfg)


def generate(root: str | Path, *, preset: str = "small", seed: int = 0, overwrite: bool = False,
             progress: bool = False, **overrides) -> Path:
    """Generate SynthScenes into ``root`` (atomically) and return ``root``.

    Args:
        root: output folder; created with its parents.
        preset: ``tiny`` (unit tests), ``small`` (default; CPU quickstart) or ``real`` (benchmarks).
        seed: seed of all randomness.
        overwrite: replace an existing data set generated with other parameters.
        progress: show a progress bar.
        **overrides: any :class:`SynthScenesConfig` field.

    Raises:
        FileExistsError: ``root`` holds other data (or a different config) and ``overwrite`` is false. A
            folder of SynthScenes written by an older generator version is replaced (with a warning).

    Generation happens in a hidden sibling folder that is renamed into place at the end (removed on
    failure); ``meta.json`` is written last. A folder that already holds the same config is left as is.
    """
    cfg = make_config(preset, seed=seed, **overrides)
    root = Path(root)
    if is_up_to_date(root, cfg):
        return root
    meta = read_meta(root) if root.exists() else None
    older = meta is not None and meta.get("name") == "SynthScenes" and meta.get("generator_version") != GENERATOR_VERSION
    if older:  # our own generated data, from an older generator: replaced (nothing a user wrote is lost)
        log.warning("%s holds SynthScenes of generator %s; regenerating it with generator %s",
                    root, meta.get("generator_version"), GENERATOR_VERSION)
    if root.exists() and any(root.iterdir()) and not overwrite and not older:
        why = "was generated with different parameters" if meta else "is not empty and has no meta.json"
        raise FileExistsError(f"{root} {why}; pass --overwrite (overwrite=True) to replace it or choose another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        ss = np.random.SeedSequence(cfg.seed)
        proto_ss, *split_ss = ss.spawn(1 + len(SPLITS))
        protos = _prototypes(cfg, np.random.default_rng(proto_ss))
        stats, sampler = {}, _Sampler(cfg)
        for split, sss in zip(SPLITS, split_ss):
            layout_ss, feature_ss = sss.spawn(2)
            # spawned after the two streams above, so every file they write keeps its bytes: the
            # predicted scene graphs' streams (the third child), then the dev diagnostics' (the fourth)
            predicted_ss = sss.spawn(1)[0].spawn(len(SGG_PRESETS))
            (diagnostic_ss,) = sss.spawn(1)
            predicted_rngs = ({name: np.random.default_rng(s) for name, s in zip(SGG_PRESETS, predicted_ss)}
                              if cfg.predicted_graphs else {})
            stats[split] = _write_split(tmp, split, cfg.split_sizes()[split], cfg, protos, sampler,
                                        np.random.default_rng(layout_ss), np.random.default_rng(feature_ss),
                                        np.random.default_rng(diagnostic_ss), predicted_rngs, progress)
        meta = {
            "name": "SynthScenes", "generator_version": GENERATOR_VERSION, "seed": cfg.seed,
            "config": _config_record(cfg),
            "splits": cfg.split_sizes(), "captions_per_image": cfg.captions_per_image,
            "regions": cfg.regions, "feature_dim": cfg.feature_dim,
            **_vocabulary(),
            "diagnostics": stats["test"].pop("diagnostics"),
            "dev_diagnostics": stats["dev"].pop("diagnostics"),
            "statistics": stats,
        }
        if cfg.predicted_graphs:
            meta["predicted_scene_graphs"] = predicted_meta()
        with open(tmp / "meta.json.part", "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        os.replace(tmp / "meta.json.part", tmp / "meta.json")
        if root.exists():
            trash = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(root, trash)
            os.replace(tmp, root)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
