"""Visual graphs: box graphs, the BUTD TSV converter, GSMN size conversion, scene-graph readers."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from kgitm.data.butd_tsv import ButdFormatError, convert_butd_tsv
from kgitm.cli.convert_butd import main as convert_butd_main
from kgitm.data.gsmn_sizes import PickleRefusedError, load_gsmn_sizes
from kgitm.cli.convert_gsmn_sizes import main as gsmn_sizes_main
from kgitm.core.geometry import normalize_boxes
from kgitm.graphs.scene_graph_json import (
    SceneGraphFormatError,
    read_motifs_predictions,
    read_vg_scene_graphs,
)
from kgitm.graphs.store import VisualGraphStore
from kgitm.graphs.visual import box_adjacency, box_graph, box_graph_batch

# ------------------------------------------------------------------------------------ box graphs

# centres (0.25, 0.25), (0.75, 0.25), (0.25, 0.75)
THREE = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0]])


def _edge_attr(data, src: int, dst: int) -> torch.Tensor:
    hit = ((data.edge_index[0] == src) & (data.edge_index[1] == dst)).nonzero()
    assert len(hit) == 1, f"edge {src}->{dst} missing or repeated"
    return data.edge_attr[hit[0, 0]]


def test_polar_pseudo_coordinates_three_boxes_by_hand():
    g = box_graph(THREE)
    assert g.num_nodes == 3 and g.edge_index.shape == (2, 6)
    torch.testing.assert_close(g.pos, torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75]]))
    # edge source -> target carries polar(c_source - c_target); theta is atan2 / pi in [-1, 1]
    expected = {
        (1, 0): (0.5, 0.0),  # 1 is right of 0
        (2, 0): (0.5, 0.5),  # 2 is below 0 (image y grows downwards): +pi/2
        (0, 1): (0.5, 1.0),  # 0 is left of 1: pi
        (2, 1): (math.sqrt(0.5), 0.75),  # down-left: 3pi/4
        (0, 2): (0.5, -0.5),
        (1, 2): (math.sqrt(0.5), -0.25),
    }
    for (s, t), (rho, theta) in expected.items():
        torch.testing.assert_close(_edge_attr(g, s, t), torch.tensor([rho, theta]), atol=1e-6, rtol=0)


def test_box_graph_from_pixel_boxes_uses_shared_normalisation():
    pixel = THREE.unsqueeze(0) * torch.tensor([640.0, 480.0, 640.0, 480.0])
    norm = normalize_boxes(pixel, torch.tensor([[640.0, 480.0]]))
    torch.testing.assert_close(box_graph(norm[0]).edge_attr, box_graph(THREE).edge_attr)


def test_full_and_knn_edge_counts_with_padding():
    torch.manual_seed(0)
    xy = torch.rand(2, 10, 2) * 0.8
    boxes = torch.cat([xy, xy + 0.1], dim=-1)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False  # 7 valid regions
    for n, v in ((0, 10), (1, 7)):
        full = box_graph(boxes[n], valid_mask=mask[n])
        assert full.edge_index.size(1) == v * (v - 1)
        for k in (1, 3, 8, 20):
            knn = box_graph(boxes[n], mode="knn", k=k, valid_mask=mask[n])
            assert knn.edge_index.size(1) == v * min(k, v - 1)
            assert torch.bincount(knn.edge_index[1], minlength=10)[:v].eq(min(k, v - 1)).all()  # in-degree
            assert not (knn.edge_index >= v).any() or n == 0  # padded regions are isolated
            assert (knn.edge_index[0] != knn.edge_index[1]).all()


def test_knn_picks_the_nearest_regions():
    # centres on a line at x = 0, 0.1, 0.3, 0.7
    xs = torch.tensor([0.0, 0.1, 0.3, 0.7])
    boxes = torch.stack([xs, torch.zeros(4), xs, torch.zeros(4)], dim=-1)
    adj = box_adjacency(boxes.unsqueeze(0), mode="knn", k=1)[0]
    nearest = adj.float().argmax(dim=1)  # adj[i, j]: j sends to i
    assert nearest.tolist() == [1, 0, 1, 2]


def test_batched_box_graphs_equal_single_graphs():
    torch.manual_seed(1)
    xy = torch.rand(3, 6, 2) * 0.5
    boxes = torch.cat([xy, xy + 0.3], dim=-1)
    mask = torch.rand(3, 6) > 0.3
    for mode in ("full", "knn"):
        batch = box_graph_batch(boxes, mode=mode, k=2, valid_mask=mask)
        ref = Batch.from_data_list([box_graph(boxes[n], mode=mode, k=2, valid_mask=mask[n]) for n in range(3)])
        assert batch.num_graphs == 3 and batch.num_nodes == 18
        assert torch.equal(batch.edge_index, ref.edge_index)
        torch.testing.assert_close(batch.edge_attr, ref.edge_attr)
        assert torch.equal(batch.batch, ref.batch)


def test_box_graph_rejects_bad_input():
    with pytest.raises(ValueError, match="mode"):
        box_graph(THREE, mode="ring")
    with pytest.raises(ValueError, match=r"\(R, 4\)"):
        box_graph(torch.zeros(3, 5))


# ------------------------------------------------------------------------------------- BUTD TSV


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.float32).tobytes()).decode()


def _write_tsv(path: Path, images: list[tuple[str, int, int, np.ndarray, np.ndarray]]) -> None:
    with open(path, "w") as f:
        for image_id, w, h, boxes, feats in images:
            f.write("\t".join([image_id, str(w), str(h), str(len(boxes)), _b64(boxes), _b64(feats)]) + "\n")


@pytest.fixture
def butd_images():
    rng = np.random.default_rng(0)
    images = []
    for k, nb in enumerate([4, 2, 4, 3]):  # R = 4: two images are padded
        boxes = np.sort(rng.uniform(0, 300, size=(nb, 4)).astype(np.float32).reshape(nb, 2, 2), axis=1).reshape(nb, 4)
        images.append((str(1000 + k), 320 + k, 240 + k, boxes[:, [0, 2, 1, 3]], rng.normal(size=(nb, 8)).astype(np.float32)))
    return images


def test_butd_tsv_round_trip_keeps_boxes_and_sizes(tmp_path, butd_images):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    _write_tsv(a, butd_images[:2])
    _write_tsv(b, butd_images[2:])
    ids = tmp_path / "ids.txt"
    ids.write_text("1003\n1000\n1001\n")  # reorder and select (1002 is not in the split)
    assert convert_butd_main([str(a), str(b), "--split", "test", "--out", str(tmp_path / "out"), "--ids", str(ids), "--regions", "4"]) == 0
    out = tmp_path / "out"
    feats = np.load(out / "test_ims.npy", mmap_mode="r")
    bbx, size = np.load(out / "test_ims_bbx.npy"), np.load(out / "test_ims_size.npy")
    nboxes = np.load(out / "test_ims_nboxes.npy")
    assert feats.shape == (3, 4, 8) and feats.dtype == np.float32
    assert bbx.shape == (3, 4, 4) and size.shape == (3, 2) and size.dtype != object
    assert (out / "test_ids.txt").read_text().split() == ["1003", "1000", "1001"]
    by_id = {im[0]: im for im in butd_images}
    for row, image_id in enumerate(["1003", "1000", "1001"]):
        _, w, h, boxes, f = by_id[image_id]
        nb = len(boxes)
        assert nboxes[row] == nb
        np.testing.assert_array_equal(feats[row, :nb], f)
        np.testing.assert_array_equal(bbx[row, :nb], boxes)
        assert not feats[row, nb:].any() and not bbx[row, nb:].any()
        np.testing.assert_array_equal(size[row], [w, h])
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


def test_butd_tsv_without_ids_keeps_tsv_order(tmp_path, butd_images):
    _write_tsv(tmp_path / "a.tsv", butd_images)
    s = convert_butd_tsv([tmp_path / "a.tsv"], split="dev", out_dir=tmp_path, regions=5, progress=False)
    assert s.num_images == 4 and s.feature_dim == 8 and s.padded_images == 4
    assert (tmp_path / "dev_ids.txt").read_text().split() == ["1000", "1001", "1002", "1003"]


def test_butd_tsv_errors(tmp_path, butd_images):
    _write_tsv(tmp_path / "a.tsv", butd_images)
    with pytest.raises(ButdFormatError, match="4 boxes, more than --regions 3"):
        convert_butd_tsv([tmp_path / "a.tsv"], split="t", out_dir=tmp_path / "o", regions=3, progress=False)
    assert not list((tmp_path / "o").glob("t_*"))  # nothing half-written under a final name
    s = convert_butd_tsv([tmp_path / "a.tsv"], split="t", out_dir=tmp_path / "o", regions=3, truncate=True, progress=False)
    assert s.num_images == 4
    with pytest.raises(ButdFormatError, match="'42'"):
        convert_butd_tsv([tmp_path / "a.tsv"], split="t", out_dir=tmp_path / "o", ids=["1000", "42"], progress=False)


def test_gsmn_sizes_need_explicit_allow_pickle(tmp_path, capsys):
    dicts = np.array([{"image_w": 500, "image_h": 375}, {"image_w": 333, "image_h": 500}], dtype=object)
    src = tmp_path / "test_ims_size.npy"
    np.save(src, dicts, allow_pickle=True)
    with pytest.raises(PickleRefusedError, match="--allow-pickle"):
        load_gsmn_sizes(src)
    assert gsmn_sizes_main([str(src), "--out", str(tmp_path / "plain.npy")]) == 1
    assert "--allow-pickle" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="unpickling"):
        sizes = load_gsmn_sizes(src, allow_pickle=True)
    np.testing.assert_array_equal(sizes, [[500, 375], [333, 500]])
    assert gsmn_sizes_main([str(src), "--out", str(tmp_path / "plain.npy"), "--allow-pickle"]) == 0
    assert "warning" in capsys.readouterr().err
    plain = np.load(tmp_path / "plain.npy")  # allow_pickle=False: a plain array now
    assert plain.dtype == np.float32 and plain.shape == (2, 2)
    np.testing.assert_array_equal(load_gsmn_sizes(tmp_path / "plain.npy"), plain)  # plain input: no flag needed


# -------------------------------------------------------------------------- scene-graph readers

VG = [
    {
        "image_id": 7,
        "objects": [
            {"object_id": 1, "names": ["man"], "attributes": ["tall"], "x": 10, "y": 20, "w": 30, "h": 40, "region_index": 0},
            {"object_id": 2, "name": "horse", "x": 5, "y": 5, "w": 100, "h": 50},
            {"object_id": 3, "names": ["hat"], "x": 12, "y": 18, "w": 5, "h": 4, "region_index": 5},
        ],
        "attributes": [{"object_id": 2, "attributes": ["brown"]}],
        "relationships": [
            {"subject_id": 1, "object_id": 2, "predicate": "Riding"},
            {"subject": {"object_id": 1}, "object": {"object_id": 3}, "predicate": "wearing"},
        ],
    },
    {"image_id": "8", "objects": [], "relationships": []},
]


def test_vg_reader(tmp_path):
    path = tmp_path / "test_scene_graphs.json"
    path.write_text(json.dumps(VG))
    g, empty = read_vg_scene_graphs(path)
    assert g.image_id == "7" and g.labels == ["man", "horse", "hat"]
    assert g.attributes == [["tall"], ["brown"], []]
    torch.testing.assert_close(g.boxes[0], torch.tensor([10.0, 20.0, 40.0, 60.0]))
    assert g.region_index == [0, -1, 5]
    assert g.relations == [(0, "riding", 1), (0, "wearing", 2)]
    assert empty.num_objects == 0 and empty.relations == [] and empty.region_index is None
    data = g.to_pyg(label_vocab={"man": 0, "horse": 1, "hat": 2}, predicate_vocab={"riding": 0, "wearing": 1})
    assert data.num_nodes == 3 and data.edge_index.tolist() == [[0, 0], [1, 2]]
    assert data.y.tolist() == [0, 1, 2] and data.edge_type.tolist() == [0, 1] and data.edge_label == ["riding", "wearing"]
    assert empty.to_pyg().edge_index.shape == (2, 0)
    nxg = g.to_networkx()
    assert nxg.nodes[2]["label"] == "hat" and nxg.nodes[0]["object_id"] == 1
    assert [d["predicate"] for _, _, d in nxg.edges(data=True)] == ["riding", "wearing"]


def test_vg_reader_errors_name_file_image_and_object(tmp_path):
    bad = json.loads(json.dumps(VG))
    bad[0]["relationships"].append({"subject_id": 1, "object_id": 99, "predicate": "on"})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(SceneGraphFormatError) as e:
        read_vg_scene_graphs(path)
    msg = str(e.value)
    assert str(path) in msg and "image 7" in msg and "99" in msg and "\n" not in msg
    dup = json.loads(json.dumps(VG))
    dup[0]["objects"][2]["object_id"] = 1
    path.write_text(json.dumps(dup))
    with pytest.raises(SceneGraphFormatError, match=r"image 7: duplicate object_id 1"):
        read_vg_scene_graphs(path)


def test_motifs_reader_keys_names_and_filters(tmp_path):
    preds = {
        "ind_to_classes": ["__background__", "man", "horse", "hat"],
        "ind_to_predicates": ["__background__", "on", "riding", "wearing"],
        "predictions": {
            "img1": {
                "boxes": [[0, 0, 10, 10], [5, 5, 50, 50], [1, 1, 3, 3]],
                "labels": [1, 2, 3],
                "pred_rel_inds": [[0, 1], [0, 2], [2, 0]],
                "rel_scores": [[0.1, 0.2, 0.7, 0.0], [0.0, 0.1, 0.0, 0.9], [0.5, 0.3, 0.1, 0.1]],
            }
        },
    }
    path = tmp_path / "motifs.json"
    path.write_text(json.dumps(preds))
    (g,) = read_motifs_predictions(path)
    assert g.image_id == "img1" and g.labels == ["man", "horse", "hat"]
    assert g.relations == [(0, "wearing", 2), (0, "riding", 1), (2, "on", 0)]  # sorted by score
    assert g.relation_scores == pytest.approx([0.9, 0.7, 0.3])
    (top,) = read_motifs_predictions(path, top_k=2, score_threshold=0.5)
    assert top.relations == [(0, "wearing", 2), (0, "riding", 1)]
    (one,) = read_motifs_predictions(path, top_k=1)
    assert one.relations == [(0, "wearing", 2)]

    flat = [{"image_id": 3, "box_labels": ["dog", "frisbee"], "rel_pairs": [[0, 1]], "rel_labels": ["catching"],
             "rel_scores": [0.4], "region_index": [4, 9]}]
    path.write_text(json.dumps(flat))
    (g2,) = read_motifs_predictions(path)
    assert g2.relations == [(0, "catching", 1)] and g2.region_index == [4, 9] and g2.boxes.shape == (2, 4)

    flat[0]["rel_pairs"] = [[0, 5]]
    path.write_text(json.dumps(flat))
    with pytest.raises(SceneGraphFormatError, match=r"motifs.json: image 3: relation points at missing object index 5"):
        read_motifs_predictions(path)
    flat[0]["rel_pairs"] = [[0, 1]]
    flat[0]["box_labels"] = [1, 2]
    path.write_text(json.dumps(flat))
    with pytest.raises(SceneGraphFormatError, match="no name table"):
        read_motifs_predictions(path)


def test_visual_graph_store_round_trip(tmp_path):
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(VG + [VG[0] | {"image_id": 9}]))
    graphs = read_vg_scene_graphs(path)
    store = VisualGraphStore.build(graphs)
    store.save(tmp_path / "visual", {"format_version": 1})
    loaded = VisualGraphStore.load(tmp_path / "visual")
    assert len(loaded) == 3
    for i, g in enumerate(graphs):
        h = loaded[i]
        assert (h.image_id, h.labels, h.attributes, h.relations, h.region_index, h.object_ids) == (
            g.image_id, g.labels, g.attributes, g.relations, g.region_index, g.object_ids)
        torch.testing.assert_close(h.boxes, g.boxes)
    sg = loaded.scene_graph_tensors([2, 1, 0])
    assert sg.num_graphs == 3 and sg.object_batch.tolist() == [0, 0, 0, 2, 2, 2]
    # relations of image 0 (batch position 2) point at its objects, rows 3..5
    assert sg.relation_index[:, sg.relation_batch == 2].tolist() == [[3, 3], [4, 5]]
    assert [sg.vocab[k] for k in sg.relation_labels[sg.relation_batch == 0].tolist()] == ["riding", "wearing"]
    assert sg.boxes.shape == (6, 4) and sg.region_index.tolist() == [0, -1, 5, 0, -1, 5]
    assert [sg.vocab[k] for k in sg.attribute_labels.tolist()] == ["tall", "brown", "tall", "brown"]
    assert sg.attribute_object.tolist() == [0, 1, 3, 4]
