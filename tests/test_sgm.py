"""SGM: collation of scene graphs, vectorised block scores against a naive per-pair loop, and the
structural properties of the score (direction, empty graphs, duplicates, permutations, gradients)."""

from __future__ import annotations

import math

import pytest
import torch

from kgitm.core.text import tokenize
from kgitm.graphs.scene_graph_json import VisualSceneGraph
from kgitm.graphs.scene_graph_index import (
    box_iou,
    collate_text_scene_graphs,
    collate_visual_scene_graphs,
    find_predicate_tokens,
)
from kgitm.graphs.types import DependencyGraph, ParsedCaption, SceneGraph, SGObject
from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.matchers.sgm import SGM, relation_geometry

D = 8


# ---------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------


def parsed(caption: str, objects: list[tuple[str, int]], relations: list[tuple[int, str, int]]) -> ParsedCaption:
    """A parsed caption whose objects are single tokens at the given positions."""
    tokens = tokenize(caption)
    return ParsedCaption(
        caption=caption,
        dependency=DependencyGraph(tokens=tokens),
        scene_graph=SceneGraph(
            objects=[SGObject(name=name, span=(pos, pos + 1)) for name, pos in objects],
            relations=list(relations),
        ),
    )


def random_block(seed: int = 0):
    """Images and captions with every edge case: no objects, objects without relations, duplicates."""
    g = torch.Generator().manual_seed(seed)
    n, r, o_v, t_v = 5, 6, 4, 3
    m, l, o_t, t_t, p = 6, 9, 3, 3, 2
    xy = torch.rand(n, r, 2, generator=g) * 0.6
    boxes = torch.cat([xy, xy + 0.05 + torch.rand(n, r, 2, generator=g) * 0.35], -1)
    iex = {
        "obj_region": torch.randint(0, r, (n, o_v), generator=g),
        "obj_mask": torch.ones(n, o_v, dtype=torch.bool),
        "rel_subj": torch.randint(0, o_v, (n, t_v), generator=g),
        "rel_obj": torch.randint(0, o_v, (n, t_v), generator=g),
        "rel_mask": torch.rand(n, t_v, generator=g) > 0.3,
        "rel_label": torch.randint(-1, 4, (n, t_v), generator=g),
    }
    iex["obj_mask"][1, 2:] = False  # fewer objects
    iex["rel_mask"][1] = torch.tensor([True, False, False])
    iex["rel_subj"][1, 0], iex["rel_obj"][1, 0] = 0, 1
    iex["obj_mask"][2] = False  # no objects at all
    iex["rel_mask"][2] = False
    iex["rel_mask"][3] = False  # objects but no relation
    iex["obj_region"][4, 1] = iex["obj_region"][4, 0]  # duplicate object
    iex["rel_mask"][4] = True
    images = EncodedImages(torch.randn(n, r, D, generator=g), torch.ones(n, r, dtype=torch.bool), boxes, iex)

    cex = {
        "obj_token": torch.randint(0, l, (m, o_t), generator=g),
        "obj_mask": torch.ones(m, o_t, dtype=torch.bool),
        "rel_subj": torch.randint(0, o_t, (m, t_t), generator=g),
        "rel_obj": torch.randint(0, o_t, (m, t_t), generator=g),
        "rel_pred_tokens": torch.randint(0, l, (m, t_t, p), generator=g),
        "rel_pred_mask": torch.rand(m, t_t, p, generator=g) > 0.3,
        "rel_mask": torch.rand(m, t_t, generator=g) > 0.3,
    }
    cex["rel_mask"][0] = True
    cex["rel_pred_mask"][0, 1] = False  # unknown predicate
    cex["obj_mask"][1] = False  # no objects
    cex["rel_mask"][1] = False
    cex["rel_mask"][2] = False  # objects but no relation
    cex["obj_token"][3, 1] = cex["obj_token"][3, 0]  # duplicate object
    cex["obj_mask"][4, 1:] = False
    cex["rel_subj"][4], cex["rel_obj"][4] = 0, 0  # self relation
    captions = EncodedCaptions(torch.randn(m, l, D, generator=g), torch.ones(m, l, dtype=torch.bool), None, cex)
    return images, captions


def naive_best_match_mean(v, v_mask, t, t_mask) -> float:
    scores = []
    for u in range(t.shape[0]):
        if not t_mask[u]:
            continue
        best = None
        for k in range(v.shape[0]):
            if v_mask[k]:
                dot = float(sum(float(a) * float(b) for a, b in zip(t[u], v[k])))
                best = dot if best is None else max(best, dot)
        scores.append(0.0 if best is None else best)
    return sum(scores) / len(scores) if scores else 0.0


def naive_scores(model: SGM, images: EncodedImages, captions: EncodedCaptions) -> torch.Tensor:
    """Each image and caption encoded on its own; every pair scored with plain loops."""
    out = torch.zeros(len(images), len(captions), dtype=torch.float64)
    for i in range(len(images)):
        vi = model.prepare_images(images.index(slice(i, i + 1))).extra
        for j in range(len(captions)):
            tc = model.prepare_captions(captions.index(slice(j, j + 1))).extra
            s_obj = naive_best_match_mean(vi["sgm_obj"][0], vi["obj_mask"][0], tc["sgm_obj"][0], tc["obj_mask"][0])
            s_rel = naive_best_match_mean(vi["sgm_rel"][0], vi["rel_mask"][0], tc["sgm_rel"][0], tc["rel_mask"][0])
            out[i, j] = s_obj + model.rho * s_rel
    return out


# ---------------------------------------------------------------------------------------------
# matcher
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_layers=1),
        dict(num_layers=0, rho=0.5),
        dict(num_layers=2, update_objects=True, num_predicate_labels=4, rho=2.0),
        dict(num_layers=2, use_box_geometry=False),
    ],
)
def test_block_equals_naive_per_pair_loop(kwargs):
    torch.manual_seed(0)
    model = SGM(D, **kwargs).eval()
    images, captions = random_block()
    with torch.no_grad():
        block = model(images, captions)
        ref = naive_scores(model, images, captions)
    assert block.shape == (len(images), len(captions))
    assert torch.isfinite(block).all()
    torch.testing.assert_close(block.double(), ref, atol=1e-5, rtol=0)


def test_forward_is_match_of_prepared_sides_and_blocks_tile():
    torch.manual_seed(0)
    model = SGM(D, num_layers=2, update_objects=True).eval()
    images, captions = random_block(1)
    with torch.no_grad():
        whole = model(images, captions)
        pi, pc = model.prepare_images(images), model.prepare_captions(captions)
        torch.testing.assert_close(model.match(pi, pc), whole)
        torch.testing.assert_close(model(pi, pc), whole)  # prepared inputs are not re-encoded
        tiles = torch.cat(
            [torch.cat([model(pi.index(slice(a, a + 2)), pc.index(slice(b, b + 4))) for b in (0, 4)], 1)
             for a in (0, 2, 4)], 0)
    torch.testing.assert_close(tiles, whole)


def vg(entry: dict):
    """A Visual-Genome-style dict read by the project's one VG reader (names default to "obj")."""
    from kgitm.graphs.scene_graph_json import parse_vg_image

    entry = {**entry, "objects": [{"names": ["obj"], **o} for o in entry.get("objects", [])]}
    return parse_vg_image(entry)


def test_hand_computed_object_scores():
    """Zero layers, one-hot features: S is the mean over text objects of the best visual match."""
    eye = torch.eye(D)
    feats = torch.stack([eye[:4], eye[4:8]])  # image 0: regions e0..e3, image 1: e4..e7
    iex = collate_visual_scene_graphs(
        [vg({"image_id": 0, "objects": [{"object_id": 1, "region_index": 0}, {"object_id": 2, "region_index": 2}]}),
         vg({"image_id": 1, "objects": [{"object_id": 1, "region_index": 3}]})],
        num_regions=4, max_objects=3, max_relations=2)
    boxes = torch.tensor([0.1, 0.1, 0.5, 0.5]).expand(2, 4, 4)
    images = EncodedImages(feats, torch.ones(2, 4, dtype=torch.bool), boxes, iex)
    words = torch.zeros(2, 3, D)
    words[0, 0], words[0, 2] = eye[0], eye[7]  # caption 0: objects e0 and e7
    words[1, 1] = (eye[2] + eye[7]) / math.sqrt(2)  # caption 1: one object between e2 and e7
    cex = collate_text_scene_graphs(
        [parsed("dog on cat", [("dog", 0), ("cat", 2)], []), parsed("a dog", [("dog", 1)], [])],
        max_objects=2, max_relations=1, max_predicate_words=1)
    captions = EncodedCaptions(words, torch.ones(2, 3, dtype=torch.bool), None, cex)
    model = SGM(D, num_layers=0)
    expected = torch.tensor([[0.5, 1 / math.sqrt(2)], [0.5, 1 / math.sqrt(2)]])
    torch.testing.assert_close(model(images, captions), expected)


def test_permutation_equivariance_of_blocks_and_of_object_order():
    torch.manual_seed(0)
    model = SGM(D, num_layers=2, update_objects=True).eval()
    images, captions = random_block(2)
    pi, pc = torch.randperm(len(images)), torch.randperm(len(captions))
    with torch.no_grad():
        s = model(images, captions)
        torch.testing.assert_close(model(images.index(pi), captions.index(pc)), s[pi][:, pc])
        # reorder the object slots of every graph, remapping the relations: scores unchanged
        ex = dict(images.extra)
        perm = torch.randperm(ex["obj_region"].shape[1])
        inv = torch.argsort(perm)
        ex["obj_region"], ex["obj_mask"] = ex["obj_region"][:, perm], ex["obj_mask"][:, perm]
        ex["rel_subj"], ex["rel_obj"] = inv[ex["rel_subj"]], inv[ex["rel_obj"]]
        torch.testing.assert_close(model(EncodedImages(images.features, images.mask, images.boxes, ex), captions), s)


@pytest.mark.parametrize("update_objects", [False, True])
def test_swapping_a_text_relation_direction_changes_only_the_relation_term(update_objects):
    torch.manual_seed(0)
    model = SGM(D, num_layers=2, update_objects=update_objects).eval()
    images, _ = random_block(3)
    cap = parsed("a man riding a horse", [("man", 1), ("horse", 4)], [(0, "ride", 1)])
    rev = parsed("a man riding a horse", [("man", 1), ("horse", 4)], [(1, "ride", 0)])
    words = torch.randn(1, 5, D).expand(2, -1, -1)
    ex = collate_text_scene_graphs([cap, rev], max_objects=2, max_relations=1, max_predicate_words=2)
    assert ex["rel_subj"].tolist() == [[0], [1]] and ex["rel_pred_tokens"][:, 0, 0].tolist() == [2, 2]
    captions = EncodedCaptions(words, torch.ones(2, 5, dtype=torch.bool), None, ex)
    with torch.no_grad():
        s_obj, s_rel = model.match_terms(model.prepare_images(images), model.prepare_captions(captions))
    has_rel = images.extra["rel_mask"].any(-1)
    assert (s_rel[has_rel, 0] - s_rel[has_rel, 1]).abs().min() > 1e-4
    if update_objects:  # objects receive role-specific messages: the direction reaches them too
        assert not torch.allclose(s_obj[:, 0], s_obj[:, 1])
    else:
        torch.testing.assert_close(s_obj[:, 0], s_obj[:, 1])


def test_empty_graphs_give_finite_scores_and_missing_relations_give_object_score_only():
    torch.manual_seed(0)
    model = SGM(D, num_layers=2, update_objects=True).eval()
    images, captions = random_block(4)
    with torch.no_grad():
        pi, pc = model.prepare_images(images), model.prepare_captions(captions)
        s = model.match(pi, pc)
        s_obj, s_rel = model.match_terms(pi, pc)
    assert torch.isfinite(s).all()
    assert (s[:, 1] == 0).all()  # caption without objects
    assert (s[2, :] == 0).all()  # image without objects
    torch.testing.assert_close(s[:, 2], s_obj[:, 2])  # caption without relations
    assert (s_rel[:, 2] == 0).all()
    torch.testing.assert_close(s[3, :], s_obj[3, :])  # image without relations
    assert (s_rel[3, :] == 0).all()


def test_duplicate_visual_objects_do_not_change_scores_without_relations():
    torch.manual_seed(0)
    model = SGM(D, num_layers=1).eval()
    images, captions = random_block(5)
    ex = {k: v.clone() for k, v in images.extra.items()}
    ex["rel_mask"][:] = False
    ex["obj_mask"][:, -1] = False
    dup = {k: v.clone() for k, v in ex.items()}
    dup["obj_region"][:, -1], dup["obj_mask"][:, -1] = dup["obj_region"][:, 0], dup["obj_mask"][:, 0]
    with torch.no_grad():
        a = model(EncodedImages(images.features, images.mask, images.boxes, ex), captions)
        b = model(EncodedImages(images.features, images.mask, images.boxes, dup), captions)
    torch.testing.assert_close(a, b)


def test_gradients_flow_and_are_finite():
    torch.manual_seed(0)
    model = SGM(D, num_layers=2, update_objects=True, num_predicate_labels=4)
    images, captions = random_block(6)
    images.features.requires_grad_(True)
    captions.features.requires_grad_(True)
    s = model(images, captions)
    (s.diag().sum() - s.logsumexp(1).sum()).backward()
    assert torch.isfinite(images.features.grad).all() and images.features.grad.abs().sum() > 0
    assert torch.isfinite(captions.features.grad).all() and captions.features.grad.abs().sum() > 0
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert model.unknown_predicate.grad.abs().sum() > 0


def test_missing_extra_keys_and_boxes_are_reported():
    model = SGM(D)
    images, captions = random_block()
    with pytest.raises(ValueError, match="obj_region"):
        model(EncodedImages(images.features, images.mask, images.boxes, {}), captions)
    with pytest.raises(ValueError, match="images.boxes"):
        model(EncodedImages(images.features, images.mask, None, images.extra), captions)


def test_relation_geometry_and_box_iou():
    s = torch.tensor([0.0, 0.0, 0.2, 0.4])
    o = torch.tensor([0.1, 0.0, 0.5, 0.2])
    g = relation_geometry(s, o, eps=1e-6)
    expected = torch.tensor([(0.3 - 0.1) / 0.2, (0.1 - 0.2) / 0.4, math.log(2.0), math.log(0.5), 0.02 / 0.14])
    torch.testing.assert_close(g, expected)
    assert box_iou(torch.zeros(4), torch.zeros(4)) == 0
    assert torch.isfinite(relation_geometry(torch.zeros(4), torch.zeros(4), eps=1e-6)).all()


# ---------------------------------------------------------------------------------------------
# collation
# ---------------------------------------------------------------------------------------------


def test_collate_text_scene_graphs():
    #      0 1   2       3  4 5     6    7  8 9   10 11      12 13
    cap = "a man sitting on a bench next to a dog is wearing a hat"
    toks = tokenize(cap)
    assert toks[5] == "bench" and toks[9] == "dog" and toks[13] == "hat"
    graphs = [
        parsed(cap, [("man", 1), ("bench", 5), ("dog", 9), ("hat", 13)],
               [(0, "sit on", 1), (1, "next to", 2), (0, "wear", 3), (2, "hold", 3)]),
        parsed("nothing to see", [], []),
        parsed("a red car", [("car", 2)], []),
    ]
    # a compound span uses its last token
    graphs[0].scene_graph.objects[1] = SGObject(name="bench", span=(4, 6))
    out = collate_text_scene_graphs(graphs, max_objects=3, max_relations=3, max_predicate_words=2)
    assert set(out) == {"obj_token", "obj_mask", "rel_subj", "rel_obj", "rel_pred_tokens", "rel_pred_mask",
                        "rel_mask"}
    assert out["obj_token"].tolist() == [[1, 5, 9], [0, 0, 0], [2, 0, 0]]
    assert out["obj_mask"].tolist() == [[True] * 3, [False] * 3, [True, False, False]]
    # "hat" is beyond max_objects: the relations touching it are dropped
    assert out["rel_mask"].tolist() == [[True, True, False], [False] * 3, [False] * 3]
    assert out["rel_subj"][0, :2].tolist() == [0, 1] and out["rel_obj"][0, :2].tolist() == [1, 2]
    assert out["rel_pred_tokens"][0, :2].tolist() == [[2, 3], [6, 7]]
    assert out["rel_pred_mask"][0, :2].all() and not out["rel_pred_mask"][1:].any()

    out = collate_text_scene_graphs(graphs[:1], max_objects=4, max_relations=4, max_predicate_words=1)
    assert out["rel_mask"].tolist() == [[True] * 4]
    assert out["rel_pred_tokens"][0, :, 0].tolist() == [2, 6, 11, 0]
    assert out["rel_pred_mask"][0, :, 0].tolist() == [True, True, True, False]  # "hold": unknown predicate

    out = collate_text_scene_graphs(graphs[:1], max_objects=4, max_relations=4, max_predicate_words=2, max_tokens=10)
    assert out["obj_mask"].tolist() == [[True, True, True, False]]
    assert out["rel_mask"].tolist() == [[True, True, False, False]]


def test_find_predicate_tokens_prefers_the_gap_between_subject_and_object():
    toks = tokenize("a dog on a mat and a cat on a sofa")
    assert find_predicate_tokens(toks, "on", (7, 8), (10, 11)) == [8]
    assert find_predicate_tokens(toks, "on", (1, 2), (4, 5)) == [2]
    assert find_predicate_tokens(tokenize("a man riding a horse"), "rid", (1, 2), (4, 5)) == [2]
    assert find_predicate_tokens(tokenize("a woman carries bags"), "carry", (1, 2), (3, 4)) == [2]
    assert find_predicate_tokens(toks, "under", (1, 2), (4, 5)) == []


def test_collate_text_errors_name_the_caption():
    bad = parsed("a dog", [("dog", 1)], [(0, "chase", 3)])
    with pytest.raises(ValueError, match="caption 0: relation 0"):
        collate_text_scene_graphs([bad], max_objects=2, max_relations=2, max_predicate_words=1)
    bad = parsed("a dog", [("dog", 7)], [])
    with pytest.raises(ValueError, match="caption 0: object 0"):
        collate_text_scene_graphs([bad], max_objects=2, max_relations=2, max_predicate_words=1)


def test_collate_visual_scene_graphs_from_vg_dicts_and_objects():
    man = {
        "image_id": 42,
        "objects": [
            {"object_id": 10, "names": ["man"], "region_index": 3, "x": 0, "y": 0, "w": 10, "h": 10},
            {"object_id": 11, "names": ["horse"], "x": 50, "y": 50, "w": 40, "h": 40},  # no region index
            {"object_id": 12, "names": ["hat"], "region_index": 0},
        ],
        "relationships": [
            {"subject_id": 10, "object_id": 11, "predicate": "riding"},
            {"subject": {"object_id": 10}, "object": {"object_id": 12}, "predicate": "wearing"},
            {"subject_id": 12, "object_id": 11, "predicate": "above"},
        ],
    }
    vsg = VisualSceneGraph(
        image_id="img-7", labels=["cat", "sofa"], boxes=torch.tensor([[0.0, 0, 1, 1], [0, 0, 2, 2]]), region_index=[1, 0],
        relations=[(0, "on", 1), (1, "near", 0)],
    )
    region_boxes = torch.tensor([
        [[0, 0, 10, 10], [45, 45, 95, 95], [50, 50, 70, 70], [0, 0, 5, 5]],
        [[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]],
    ], dtype=torch.float)
    empty = {"image_id": 5, "objects": [], "relationships": []}
    out = collate_visual_scene_graphs(
        [vg(man), vsg, vg(empty)], num_regions=4, max_objects=3, max_relations=2, region_boxes=region_boxes,
        predicate_vocab=["on", "riding", "wearing"],
    )
    assert out["obj_region"].tolist() == [[3, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert out["obj_mask"].tolist() == [[True] * 3, [True, True, False], [False] * 3]
    assert out["rel_subj"].tolist() == [[0, 0], [0, 1], [0, 0]]
    assert out["rel_obj"].tolist() == [[1, 2], [1, 0], [0, 0]]
    assert out["rel_mask"].tolist() == [[True, True], [True, True], [False, False]]
    assert out["rel_label"].tolist() == [[1, 2], [0, -1], [-1, -1]]

    out = collate_visual_scene_graphs([vg(man)], num_regions=4, max_objects=2, max_relations=5, region_boxes=region_boxes[:1])
    assert "rel_label" not in out
    assert out["rel_mask"].tolist() == [[True, False, False, False, False]]  # relations to "hat" dropped


def test_collate_visual_errors_name_the_image():
    dangling = {"image_id": 42, "objects": [{"object_id": 1, "region_index": 0}],
                "relationships": [{"subject_id": 1, "object_id": 9, "predicate": "on"}]}
    with pytest.raises(ValueError, match=r"image 42: relationship object points at missing object_id 9"):
        collate_visual_scene_graphs([vg(dangling)], num_regions=4, max_objects=2, max_relations=2)
    vsg = VisualSceneGraph(image_id="img-7", labels=["cat"], boxes=torch.tensor([[0.0, 0, 1, 1]]), region_index=[0],
                           relations=[(0, "on", 2)])
    with pytest.raises(ValueError, match=r"^image img-7: relation 0 has object index 2"):
        collate_visual_scene_graphs([vsg], num_regions=4, max_objects=2, max_relations=2)
    no_region = {"image_id": 8, "objects": [{"object_id": 1, "x": 0, "y": 0, "w": 1, "h": 1}]}
    with pytest.raises(ValueError, match=r"^image 8: object 0 has no region_index"):
        collate_visual_scene_graphs([vg(no_region)], num_regions=4, max_objects=2, max_relations=2)
    out_of_range = {"image_id": 9, "objects": [{"object_id": 1, "region_index": 4}]}
    with pytest.raises(ValueError, match=r"^image 9: object 0 has region_index 4"):
        collate_visual_scene_graphs([vg(out_of_range)], num_regions=4, max_objects=2, max_relations=2)


def test_collated_graphs_drive_the_matcher_end_to_end():
    torch.manual_seed(0)
    caps = [
        parsed("a man riding a horse", [("man", 1), ("horse", 4)], [(0, "ride", 1)]),
        parsed("a dog", [("dog", 1)], []),
        parsed("hello", [], []),
    ]
    cex = collate_text_scene_graphs(caps, max_objects=3, max_relations=2, max_predicate_words=2, max_tokens=6)
    vgs = [
        vg({"image_id": 1, "objects": [{"object_id": 1, "region_index": 0}, {"object_id": 2, "region_index": 1}],
            "relationships": [{"subject_id": 1, "object_id": 2, "predicate": "riding"}]}),
        vg({"image_id": 2, "objects": [], "relationships": []}),
    ]
    iex = collate_visual_scene_graphs(vgs, num_regions=3, max_objects=3, max_relations=2)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.9, 0.9], [0.0, 0.0, 1.0, 1.0]]).expand(2, 3, 4)
    images = EncodedImages(torch.randn(2, 3, D), torch.ones(2, 3, dtype=torch.bool), boxes, iex)
    captions = EncodedCaptions(torch.randn(3, 6, D), torch.ones(3, 6, dtype=torch.bool), None, cex)
    model = SGM(D, num_layers=2)
    s = model(images, captions)
    assert s.shape == (2, 3) and torch.isfinite(s).all()
    assert (s[:, 2] == 0).all() and (s[1] == 0).all()
    assert model.pair_memory_bytes(images, captions) > 0


def test_collate_visual_reads_the_project_visual_scene_graph():
    sgj = pytest.importorskip("kgitm.graphs.scene_graph_json")
    g = sgj.VisualSceneGraph(
        image_id="17", labels=["man", "horse", "hat"], attributes=[[], [], []],
        boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 100.0, 100.0], [0.0, 0.0, 4.0, 4.0]]),
        region_index=[2, -1, 0], relations=[(0, "riding", 1), (0, "wearing", 2)],
    )
    region_boxes = torch.tensor([[[0.0, 0, 4, 4], [50, 50, 100, 100], [0, 0, 10, 10]]])
    out = collate_visual_scene_graphs([g], num_regions=3, max_objects=4, max_relations=2,
                                      region_boxes=region_boxes, predicate_vocab={"riding": 0})
    assert out["obj_region"].tolist() == [[2, 1, 0, 0]]  # -1 -> best IoU region
    assert out["rel_subj"].tolist() == [[0, 0]] and out["rel_obj"].tolist() == [[1, 2]]
    assert out["rel_label"].tolist() == [[0, -1]]
    bad = sgj.VisualSceneGraph(image_id="18", labels=["man"], boxes=torch.zeros(1, 4), region_index=[0],
                               relations=[(0, "on", 3)])
    with pytest.raises(ValueError, match=r"^image 18: relation 0 has object index 3"):
        collate_visual_scene_graphs([bad], num_regions=3, max_objects=4, max_relations=2)


def test_tiled_evaluation_equals_one_block():
    similarity = pytest.importorskip("kgitm.eval.similarity")
    torch.manual_seed(0)
    model = SGM(D, num_layers=2, update_objects=True).eval()
    images, captions = random_block(7)
    with torch.no_grad():
        whole = model(images, captions)
    tiled = similarity.compute_similarity(model, images, captions, image_block=2, caption_block=4)
    torch.testing.assert_close(tiled, whole)
