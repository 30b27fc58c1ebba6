"""SynthScenes generator: on-disk contract, determinism, vocabulary, diagnostics and the design rules
that make the relation-swap set unsolvable without box geometry."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from kgitm.cli.synthscenes import main as synthscenes_main
from kgitm.data import synthscenes as ss
from kgitm.data.synthscenes import features, ontology, writer
from kgitm.core.text import tokenize

WORDNET = Path("/usr/share/wordnet")
FUNCTION_WORDS = {"a", "an", "the", "of", "to", "is", "and", "with", "that"}
SPLITS = ("train", "dev", "test")


# ---------------------------------------------------------------------------------------------- helpers


def _wordnet_lemmas() -> set[str]:
    if not (WORDNET / "index.noun").exists():
        pytest.skip(f"WordNet 3.0 database not found at {WORDNET} (apt-get install wordnet-base)")
    lemmas = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"index.{pos}").read_text(encoding="latin-1").splitlines():
            if line and not line.startswith(" "):
                lemmas.add(line.split(" ", 1)[0])
    return lemmas


def _in_wordnet(word: str, lemmas: set[str]) -> bool:
    """Word or a simple inflection base (``riding`` -> ``ride``, ``sitting`` -> ``sit``) is a lemma."""
    w = word.replace(" ", "_")
    cands = {w}
    for suf in ("ing", "ed"):
        if w.endswith(suf):
            stem = w[: -len(suf)]
            cands |= {stem, stem + "e"}
            if len(stem) > 2 and stem[-1] == stem[-2]:
                cands.add(stem[:-1])
    return bool(cands & lemmas)


def _wordnet_neighbours(word: str) -> set[str]:
    """Lemmas sharing a noun synset with ``word`` or in a direct hypernym/hyponym synset."""
    offsets = []
    for line in (WORDNET / "index.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith(word + " "):
            f = line.split()
            offsets = f[-int(f[2]):]
            break
    out = set()
    with open(WORDNET / "data.noun", encoding="latin-1") as fh:
        def synset(off: str) -> tuple[list[str], list[tuple[str, str]]]:
            fh.seek(int(off))
            f = fh.readline().split()
            n = int(f[3], 16)
            words = [f[4 + 2 * i].lower() for i in range(n)]
            k = 4 + 2 * n
            return words, [(f[k + 1 + 4 * i], f[k + 2 + 4 * i]) for i in range(int(f[k]))]

        for off in offsets:
            words, ptrs = synset(off)
            out |= set(words)
            for sym, o in ptrs:
                if sym in ("@", "@i", "~", "~i"):
                    out |= set(synset(o)[0])
    return out


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in _lines(path)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return ss.generate(tmp_path_factory.mktemp("ss") / "tiny", preset="tiny", seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- contract


def test_files_shapes_and_counts(tiny: Path) -> None:
    meta = json.loads((tiny / "meta.json").read_text())
    cfg = ss.make_config("tiny")
    R, D, k = cfg.regions, cfg.feature_dim, cfg.captions_per_image
    assert meta["splits"] == cfg.split_sizes() and meta["captions_per_image"] == k
    for split in SPLITS:
        n = meta["splits"][split]
        ims = np.load(tiny / f"{split}_ims.npy")
        assert ims.shape == (n, R, D) and ims.dtype == np.float32 and np.isfinite(ims).all()
        bbx = np.load(tiny / f"{split}_ims_bbx.npy")
        assert bbx.shape == (n, R, 4) and bbx.dtype == np.float32
        size = np.load(tiny / f"{split}_ims_size.npy")  # plain array, no pickle
        assert size.shape == (n, 2) and size.dtype == np.float32
        assert (size >= cfg.min_image_size).all() and (size <= cfg.max_image_size).all()
        assert (bbx[..., 2] > bbx[..., 0]).all() and (bbx[..., 3] > bbx[..., 1]).all()
        assert (bbx >= 0).all() and (bbx[..., [0, 2]] <= size[:, None, :1] + 1e-3).all()
        assert (bbx[..., [1, 3]] <= size[:, None, 1:] + 1e-3).all()
        caps = _lines(tiny / f"{split}_caps.txt")
        assert len(caps) == k * n and all(c.strip() for c in caps)
        ids = _lines(tiny / f"{split}_ids.txt")
        assert ids == [f"synth_{split}_{i:06d}" for i in range(n)]
        graphs = json.loads((tiny / f"{split}_scene_graphs.json").read_text())
        assert len(graphs) == n and [g["image_id"] for g in graphs] == ids
    n_test = meta["splits"]["test"]
    assert len(_lines(tiny / "diagnostics" / "test_synonym_shift_caps.txt")) == k * n_test
    rel = _jsonl(tiny / "diagnostics" / "test_relation_swap.jsonl")
    att = _jsonl(tiny / "diagnostics" / "test_attribute_swap.jsonl")
    assert meta["diagnostics"]["relation_swap"] == len(rel) and meta["diagnostics"]["attribute_swap"] == len(att)
    assert len(rel) >= 0.75 * n_test  # most test images carry a relation between two distinct categories
    assert all(0 <= x["image"] < n_test for x in rel + att)


def test_scene_graphs_match_boxes(tiny: Path) -> None:
    for split in SPLITS:
        bbx = np.load(tiny / f"{split}_ims_bbx.npy")
        size = np.load(tiny / f"{split}_ims_size.npy")
        for i, g in enumerate(json.loads((tiny / f"{split}_scene_graphs.json").read_text())):
            assert (g["width"], g["height"]) == tuple(size[i])
            regions = [o["region_index"] for o in g["objects"]]
            assert len(set(regions)) == len(regions) and all(0 <= r < bbx.shape[1] for r in regions)
            assert len({o["names"][0] for o in g["objects"]}) == len(g["objects"])  # distinct categories
            for o in g["objects"]:
                x1, y1, x2, y2 = bbx[i, o["region_index"]]
                assert abs(o["x"] - x1) <= 1 and abs(o["y"] - y1) <= 1
                assert abs(o["w"] - (x2 - x1)) <= 1.5 and abs(o["h"] - (y2 - y1)) <= 1.5
                assert o["names"][0] in ontology._CAT_INDEX and set(o["attributes"]) <= set(ss.ATTRIBUTES)
            ids = {o["object_id"] for o in g["objects"]}
            for r in g["relationships"]:
                assert r["subject_id"] in ids and r["object_id"] in ids and r["subject_id"] != r["object_id"]
                assert r["predicate"] in ontology._PRED_INDEX


def test_relation_geometry_consistent_with_boxes(tiny: Path) -> None:
    seen = Counter()
    for split in SPLITS:
        bbx = np.load(tiny / f"{split}_ims_bbx.npy")
        for i, g in enumerate(json.loads((tiny / f"{split}_scene_graphs.json").read_text())):
            box = {o["object_id"]: bbx[i, o["region_index"]] for o in g["objects"]}
            for r in g["relationships"]:
                s, o, p = box[r["subject_id"]], box[r["object_id"]], r["predicate"]
                assert ss.relation_holds(p, s, o), (split, i, r)
                if not ss.PREDICATES[ontology._PRED_INDEX[p]].symmetric:
                    assert not ss.relation_holds(p, o, s), (split, i, r)
                scx, ocx = (s[0] + s[2]) / 2, (o[0] + o[2]) / 2
                scy, ocy = (s[1] + s[3]) / 2, (o[1] + o[3]) / 2
                if p == "left of":
                    assert scx < ocx
                if p == "right of":
                    assert scx > ocx
                if p in ("on", "riding", "sitting on", "standing on"):
                    assert scy < ocy
                if p == "under":
                    assert scy > ocy
                if p == "above":
                    assert s[3] <= o[1]
                seen[p] += 1
    assert len(seen) >= 10  # most predicates occur even in the tiny preset


def test_relation_holds_is_antisymmetric_on_random_boxes() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1, size=(3000, 2, 2))
    wh = rng.uniform(0.02, 0.5, size=(3000, 2, 2))
    boxes = np.concatenate([xy, xy + wh], axis=-1)
    for p in ss.PREDICATES:
        if p.symmetric:
            continue
        both = [ss.relation_holds(p.name, a, b) and ss.relation_holds(p.name, b, a) for a, b in boxes]
        assert not any(both), p.name


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_is_byte_identical_and_other_seed_differs(tiny: Path, tmp_path: Path) -> None:
    again = ss.generate(tmp_path / "again", preset="tiny", seed=0)
    assert _files(again) == _files(tiny)
    other = _files(ss.generate(tmp_path / "other", preset="tiny", seed=1))
    ref = _files(tiny)
    for name in ("train_ims.npy", "train_caps.txt", "test_ims_bbx.npy", "test_scene_graphs.json"):
        assert other[name] != ref[name], name


def test_splits_are_independent_of_other_split_sizes(tiny: Path, tmp_path: Path) -> None:
    bigger = ss.generate(tmp_path / "b", preset="tiny", seed=0, images_train=80)
    for name in ("test_ims.npy", "test_caps.txt", "diagnostics/test_relation_swap.jsonl"):
        assert (bigger / name).read_bytes() == (tiny / name).read_bytes()


# ---------------------------------------------------------------------------------------------- vocabulary


def test_vocabulary_and_caption_words_are_in_wordnet(tiny: Path) -> None:
    lemmas = _wordnet_lemmas()
    words = set()
    for c in ss.CATEGORIES:
        words |= {c.name, *c.train_words, *([c.shift_word] if c.shift_word else [])}
    words |= set(ss.ATTRIBUTES) | {s.name for s in ss.SCENES} | set(ss.STUFF)
    for p in ss.PREDICATES:
        for phrase in (p.name, *p.surface):
            words |= {w for w in phrase.split() if w not in FUNCTION_WORDS}
    missing = sorted(w for w in words if not _in_wordnet(w, lemmas))
    assert not missing, f"not in WordNet: {missing}"
    assert 40 <= len(ss.CATEGORIES) <= 80
    tokens = set()
    for path in [*(tiny / f"{s}_caps.txt" for s in SPLITS), tiny / "diagnostics" / "test_synonym_shift_caps.txt"]:
        for cap in _lines(path):
            tokens |= set(tokenize(cap))
    missing = sorted(t for t in tokens - FUNCTION_WORDS if not _in_wordnet(t, lemmas))
    assert not missing, f"caption tokens not in WordNet: {missing}"


def test_shift_words_are_wordnet_neighbours() -> None:
    _wordnet_lemmas()
    bad = [(c.name, c.shift_word) for c in ss.CATEGORIES
           if c.shift_word and c.shift_word not in _wordnet_neighbours(c.name)]
    assert not bad, f"shift words not a synonym/direct hypernym/hyponym in WordNet: {bad}"
    shift = [c.shift_word for c in ss.CATEGORIES if c.shift_word]
    assert len(shift) == len(set(shift)) >= 30


def test_shift_words_never_in_training_captions(tiny: Path) -> None:
    shift = {c.shift_word for c in ss.CATEGORIES if c.shift_word}
    train_words = {w for c in ss.CATEGORIES for w in c.train_words}
    assert not shift & train_words and not shift & set(ss.ATTRIBUTES)
    for split in SPLITS:
        tokens = {t for cap in _lines(tiny / f"{split}_caps.txt") for t in tokenize(cap)}
        assert not tokens & shift, (split, sorted(tokens & shift))
    shifted = {t for cap in _lines(tiny / "diagnostics" / "test_synonym_shift_caps.txt") for t in tokenize(cap)}
    assert shifted & shift
    meta = json.loads((tiny / "meta.json").read_text())
    assert {w for e in meta["synonym_table"] for w in e["shift_words"]} == shift


def test_no_vowel_initial_attributes() -> None:  # keeps "a <attr> <noun>" articles stable under the swap
    assert not [a for a in ss.ATTRIBUTES if a[0] in "aeiou"]


# ---------------------------------------------------------------------------------------------- diagnostics


def test_relation_swap_pairs(tiny: Path) -> None:
    graphs = json.loads((tiny / "test_scene_graphs.json").read_text())
    bbx = np.load(tiny / "test_ims_bbx.npy")
    for x in _jsonl(tiny / "diagnostics" / "test_relation_swap.jsonl"):
        pos, neg = tokenize(x["positive"]), tokenize(x["negative"])
        assert pos != neg and sorted(pos) == sorted(neg)
        subj, pred, obj = x["triple"]
        assert subj != obj and not ss.PREDICATES[ontology._PRED_INDEX[pred]].symmetric
        g = graphs[x["image"]]
        by_id = {o["object_id"]: o for o in g["objects"]}
        match = [r for r in g["relationships"] if r["predicate"] == pred
                 and by_id[r["subject_id"]]["names"][0] == subj and by_id[r["object_id"]]["names"][0] == obj]
        assert match
        s = bbx[x["image"], by_id[match[0]["subject_id"]]["region_index"]]
        o = bbx[x["image"], by_id[match[0]["object_id"]]["region_index"]]
        assert ss.relation_holds(pred, s, o) and not ss.relation_holds(pred, o, s)


def test_attribute_swap_pairs(tiny: Path) -> None:
    graphs = json.loads((tiny / "test_scene_graphs.json").read_text())
    items = _jsonl(tiny / "diagnostics" / "test_attribute_swap.jsonl")
    assert items
    for x in items:
        pos, neg = tokenize(x["positive"]), tokenize(x["negative"])
        assert pos != neg and sorted(pos) == sorted(neg)
        (c1, a1), (c2, a2) = x["attributes"]
        attrs = {o["names"][0]: set(o["attributes"]) for o in graphs[x["image"]]["objects"]}
        assert a1 in attrs[c1] and a2 in attrs[c2]  # positive true
        assert a2 not in attrs[c1] and a1 not in attrs[c2]  # negative false
        assert ss.ATTRIBUTE_GROUPS[a1] == ss.ATTRIBUTE_GROUPS[a2]


# ---------------------------------------------------------------------------------------------- design rules


def test_relation_appearance_is_direction_free() -> None:
    """Exchanging subject and object of a relation changes no region (rows, weights, noise, boxes)."""
    cfg = ss.make_config("tiny")
    for pred in ss.PREDICATES:
        img = ss.SceneLayout(scene=0, width=500, height=500, objects=[
            ss.SceneObject(ontology._CAT_INDEX["man"], (ontology._ATTR_INDEX["tall"],), (0.1, 0.1, 0.4, 0.8)),
            ss.SceneObject(ontology._CAT_INDEX["woman"], (), (0.3, 0.2, 0.6, 0.9)),
            ss.SceneObject(ontology._CAT_INDEX["dog"], (ontology._ATTR_INDEX["black"],), (0.6, 0.6, 0.9, 0.9)),
        ], relations=[(0, ontology._PRED_INDEX[pred.name], 1)])
        swapped = ss.SceneLayout(img.scene, img.width, img.height, img.objects, [(1, ontology._PRED_INDEX[pred.name], 0)])
        a = ss.region_layout(img, cfg, np.random.default_rng(3))
        b = ss.region_layout(swapped, cfg, np.random.default_rng(3))
        for f in ("rows", "weights", "noise", "boxes"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        main = a.object_region
        rel_rows = [set(a.rows[main[i], 3:].tolist()) for i in (0, 1)]
        assert rel_rows[0] == rel_rows[1]
        assert (features._ROW_PRED + ontology._PRED_INDEX[pred.name] in rel_rows[0]) == pred.semantic


def test_attribute_binds_to_its_object_only() -> None:
    cfg = ss.make_config("tiny")
    img = ss.SceneLayout(0, 500, 500, [ss.SceneObject(0, (ontology._ATTR_INDEX["tall"],), (0.1, 0.1, 0.4, 0.8)),
                                       ss.SceneObject(4, (ontology._ATTR_INDEX["black"],), (0.5, 0.5, 0.9, 0.9))], [])
    reg = ss.region_layout(img, cfg, np.random.default_rng(0))
    attr_of = {int(r[0]): set(r[1:3].tolist()) for r, w in zip(reg.rows, reg.weights) if r[0] in (0, 4) and w[0] > 0.5}
    assert features._ROW_ATTR + ontology._ATTR_INDEX["tall"] in attr_of[0] and features._ROW_ATTR + ontology._ATTR_INDEX["black"] not in attr_of[0]
    assert features._ROW_ATTR + ontology._ATTR_INDEX["black"] in attr_of[4] and features._ROW_ATTR + ontology._ATTR_INDEX["tall"] not in attr_of[4]


def test_features_are_the_vectorised_prototype_sums() -> None:
    cfg = ss.make_config("tiny", feature_noise=0.0)
    protos = features._prototypes(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    rows = rng.integers(0, protos.shape[0], size=(3, cfg.regions, features._SLOTS))
    weights = rng.uniform(0, 1, size=rows.shape).astype(np.float32)
    out = features._render_features(rows, weights, np.ones(rows.shape[:2], np.float32), protos, cfg, rng)
    ref = np.zeros_like(out)
    for n in range(3):
        for r in range(cfg.regions):
            for s in range(features._SLOTS):
                ref[n, r] += weights[n, r, s] * protos[rows[n, r, s]]
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_relation_pairs_are_symmetric_per_predicate(tmp_path: Path) -> None:
    """For every predicate, (A, p, B) is as frequent as (B, p, A): categories do not reveal roles."""
    root = ss.generate(tmp_path / "sym", preset="tiny", images_train=1500, images_dev=4, images_test=4,
                       regions=6, feature_dim=4, captions_per_image=1)
    graphs = json.loads((root / "train_scene_graphs.json").read_text())
    per_pred: dict[str, list[int]] = {}
    role = Counter()
    for g in graphs:
        names = {o["object_id"]: o["names"][0] for o in g["objects"]}
        for r in g["relationships"]:
            s, o = names[r["subject_id"]], names[r["object_id"]]
            per_pred.setdefault(r["predicate"], []).append(int(s < o))
            role[(s, "subject")] += 1
            role[(o, "object")] += 1
    for pred, x in per_pred.items():
        n = len(x)
        assert abs(sum(x) - n / 2) <= 4 * np.sqrt(n / 4) + 1, (pred, sum(x), n)
    for c in {c for c, _ in role}:
        n_s, n_o = role[(c, "subject")], role[(c, "object")]
        n = n_s + n_o
        assert abs(n_s - n / 2) <= 4 * np.sqrt(n / 4) + 1, (c, n_s, n_o)


# ---------------------------------------------------------------------------------------------- writing


def test_up_to_date_refuse_and_overwrite(tmp_path: Path, capsys) -> None:
    root = ss.generate(tmp_path / "d", preset="tiny")
    stamp = (root / "meta.json").stat().st_mtime_ns
    assert ss.generate(root, preset="tiny") == root
    assert (root / "meta.json").stat().st_mtime_ns == stamp
    assert synthscenes_main(["--out", str(root), "--preset", "tiny"]) == 0
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="--overwrite"):
        ss.generate(root, preset="tiny", seed=5)
    assert synthscenes_main(["--out", str(root), "--preset", "tiny", "--seed", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and len(err.splitlines()) == 1
    assert synthscenes_main(["--out", str(root), "--preset", "tiny", "--seed", "5", "--overwrite"]) == 0
    assert json.loads((root / "meta.json").read_text())["seed"] == 5
    assert "relation-swap" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temp or trash folders left


def test_failure_leaves_no_temp_folder(tmp_path: Path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(writer, "_render_features", boom)  # the name generate() looks up
    with pytest.raises(RuntimeError, match="simulated"):
        ss.generate(tmp_path / "x", preset="tiny")
    assert list(tmp_path.iterdir()) == []


def test_cli_help_and_bad_option(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        synthscenes_main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--images-train" in out and "_ims_bbx.npy" in out and "meta.json" in out
    with pytest.raises(TypeError, match="unknown SynthScenes option"):
        ss.make_config("tiny", colour_count=3)


# ---------------------------------------------------------------------------------------------- paraphrase shift


def test_paraphrases_never_appear_in_training_captions_and_cover_the_categories(tiny: Path) -> None:
    words = {w for ws in ontology.PARAPHRASES.values() for w in ws}
    train_words = {w for c in ss.CATEGORIES for w in c.train_words}
    assert len(words) == sum(map(len, ontology.PARAPHRASES.values())) >= 80  # distinct
    assert not words & train_words and not words & set(ss.ATTRIBUTES)
    assert set(ontology.PARAPHRASES) <= {c.name for c in ss.CATEGORIES}
    for split in SPLITS:
        tokens = {t for cap in _lines(tiny / f"{split}_caps.txt") for t in tokenize(cap)}
        assert not tokens & words, (split, sorted(tokens & words))
    for split in ("dev", "test"):
        for kind in ("wordnet", "other"):
            lines = _lines(tiny / "diagnostics" / f"{split}_paraphrase_{kind}_caps.txt")
            assert len(lines) == len(_lines(tiny / f"{split}_caps.txt"))
            used = {t for cap in lines for t in tokenize(cap)} & words
            assert used and (used <= ontology.PARAPHRASES_WORDNET if kind == "wordnet" else not used & ontology.PARAPHRASES_WORDNET)


def test_the_recorded_wordnet_reach_is_what_the_wordnet_source_maps() -> None:
    """PARAPHRASES_WORDNET is measured, not chosen: the WordNet source of configs/knowledge/wordnet.yaml
    maps exactly these paraphrases to their category (scripts/paraphrase_reach.py)."""
    import importlib.util

    import yaml

    _wordnet_lemmas()  # skips without WordNet
    from kgitm.knowledge import WordNetKnowledge

    spec = importlib.util.spec_from_file_location("paraphrase_reach", Path(__file__).resolve().parents[1] / "scripts/paraphrase_reach.py")
    reach_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reach_module)
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/knowledge/wordnet.yaml").read_text())
    options = {k: v for k, v in cfg["init_args"]["source"]["init_args"].items() if k != "vocabulary"}
    vocab = list(dict.fromkeys(w for c in ss.CATEGORIES for w in (c.name, *c.train_words)))
    reached = reach_module.reach(WordNetKnowledge(vocabulary=vocab, **options), vocab, reach_module.word_lists()["paraphrase"])
    assert {w for w, ok in reached.items() if ok} == ontology.PARAPHRASES_WORDNET
    assert 0 < len(ontology.PARAPHRASES_WORDNET) < len(reached)  # both subsets are populated


def test_dev_diagnostics_leave_the_dev_split_unchanged_and_exist(tiny: Path) -> None:
    pairs = _lines(tiny / "diagnostics" / "dev_relation_swap.jsonl")
    assert pairs and all(0 <= json.loads(p)["image"] < 16 for p in pairs)
    assert (tiny / "diagnostics" / "dev_synonym_shift_caps.txt").exists()


def test_a_folder_of_an_older_generator_is_regenerated_but_other_data_is_kept(tmp_path: Path) -> None:
    root = ss.generate(tmp_path / "d", preset="tiny", seed=0)
    meta = json.loads((root / "meta.json").read_text())
    meta["generator_version"] = meta["config"]["generator_version"] = "1.1"
    (root / "meta.json").write_text(json.dumps(meta))
    ss.generate(root, preset="tiny", seed=0)  # replaced, no --overwrite needed
    assert json.loads((root / "meta.json").read_text())["generator_version"] == ss.GENERATOR_VERSION
    with pytest.raises(FileExistsError, match="different parameters"):
        ss.generate(root, preset="tiny", seed=1)
