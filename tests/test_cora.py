"""CORA (Pham et al., CVPR 2024): composers against per-caption loops, masks and empty graphs,
attribute indices from parsed captions, and the three loss terms against their formulas."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.graphs.scene_graph_index import collate_text_scene_graphs, text_graph_index
from kgitm.matchers.cora import CORA, GraphAttention
from kgitm.models.losses import CoraContrastive, EntitySpecificityHinge
from test_matchers import make_captions, make_images
from test_sgm import parsed

D = 16


# ---------------------------------------------------------------------------- inputs


def cora_structure(images: EncodedImages, captions: EncodedCaptions, seed: int) -> tuple[EncodedImages, EncodedCaptions]:
    """Caption scene graphs on valid words only, with attributes: an empty graph (caption 1), objects
    without relations (caption 2), objects without attributes, padded attribute slots; the images
    carry no structure (CORA's image side is a pooling)."""
    g = torch.Generator().manual_seed(seed)
    m = len(captions)
    o, t, p, a = 3, 3, 2, 2

    def pick(row: torch.Tensor, k: int) -> torch.Tensor:
        valid = row.nonzero().flatten()
        return valid[torch.randint(0, len(valid), (k,), generator=g)]

    cex = {
        "obj_token": torch.stack([pick(captions.mask[j], o) for j in range(m)]),
        "obj_mask": torch.ones(m, o, dtype=torch.bool),
        "obj_attr_token": torch.stack([pick(captions.mask[j], o * a).view(o, a) for j in range(m)]),
        "obj_attr_mask": torch.rand(m, o, a, generator=g) > 0.4,
        "rel_subj": torch.randint(0, o, (m, t), generator=g),
        "rel_obj": torch.randint(0, o, (m, t), generator=g),
        "rel_pred_tokens": torch.stack([pick(captions.mask[j], t * p).view(t, p) for j in range(m)]),
        "rel_pred_mask": torch.rand(m, t, p, generator=g) > 0.3,
        "rel_mask": torch.rand(m, t, generator=g) > 0.3,
    }
    cex["obj_mask"][0, 2] = False  # a padded object slot (its relations dropped, as the collation does)
    cex["rel_mask"][0] &= (cex["rel_subj"][0] < 2) & (cex["rel_obj"][0] < 2)
    cex["obj_mask"][1], cex["rel_mask"][1], cex["obj_attr_mask"][1] = False, False, False  # an empty graph
    if m > 2:
        cex["rel_mask"][2] = False  # objects, no relation
    if m > 3:
        cex["obj_attr_mask"][3] = False  # objects, no attribute
    cex["obj_attr_mask"] &= cex["obj_mask"].unsqueeze(-1)
    return (EncodedImages(images.features, images.mask, images.boxes, None),
            EncodedCaptions(captions.features, captions.mask, captions.adjacency, cex))


def cora_inputs(n: int, m: int, *, seed: int, regions: int = 6, words: int = 8, min_regions: int = 2, min_words: int = 1):
    images = make_images(n, regions, D, seed=seed, min_regions=min_regions)
    captions = make_captions(m, words, D, seed=seed + 1, min_words=min_words)
    return cora_structure(images, captions, seed)


def cora_matcher(**kw) -> CORA:
    torch.manual_seed(0)
    kw.setdefault("heads", 4)
    kw.setdefault("graph_pos_dim", 4)
    return CORA(D, **kw)


# ---------------------------------------------------------------------------- naive reference


def naive_attention(layer: GraphAttention, x: torch.Tensor, neighbours: list[list[int]]) -> torch.Tensor:
    """One graph attention layer node by node, head by head, neighbour by neighbour."""
    h, dh = layer.heads, layer.channels // layer.heads
    a, k, v = layer.query(x), layer.key(x), layer.value(x)
    out = []
    for i in range(x.shape[0]):
        msg = torch.zeros(layer.channels)
        for head in range(h):
            sl = slice(head * dh, (head + 1) * dh)
            js = neighbours[i]
            if not js:
                continue
            e = torch.stack([
                layer.att[head] @ F.leaky_relu(a[i, sl] + k[j, sl], layer.negative_slope) + layer.att_bias[head] for j in js
            ])
            w = torch.softmax(e, 0)
            msg[sl] = sum(w[q] * v[j, sl] for q, j in enumerate(js))
        out.append(F.relu(layer.norm(a[i] + msg)))
    return torch.stack(out)


def naive_stack(stack, x, neighbours):
    for layer in stack.layers:
        x = naive_attention(layer, x, neighbours)
    return x


def naive_caption(matcher: CORA, words: torch.Tensor, ex: dict, j: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Caption ``j``'s vector and entities from the paper's description, one object at a time."""
    from test_matcher_contract import naive_gpo

    objects = ex["obj_mask"][j].nonzero().flatten().tolist()
    if not objects:
        return torch.zeros(matcher.embed_dim), []
    entities = {}
    for s in objects:
        nodes = [matcher.entity_phrase(words[ex["obj_token"][j, s]])]
        for q in range(ex["obj_attr_token"].shape[-1]):
            if ex["obj_attr_mask"][j, s, q]:
                nodes.append(matcher.entity_phrase(words[ex["obj_attr_token"][j, s, q]]))
        star = [list(range(len(nodes)))] + [[0] for _ in nodes[1:]]  # object: itself and its attributes
        entities[s] = matcher.entity_out(naive_stack(matcher.entity_attention, torch.stack(nodes), star)[0])
    x = {}
    for s in objects:
        pos = torch.tensor([math.sin(s / 10000 ** (i / matcher.graph_pos_dim)) if i % 2 == 0
                            else math.cos(s / 10000 ** ((i - 1) / matcher.graph_pos_dim)) for i in range(matcher.graph_pos_dim)])
        x[s] = matcher.position_norm(matcher.entity_in(entities[s]) + matcher.position(pos))
    relations = [r for r in range(ex["rel_mask"].shape[1]) if ex["rel_mask"][j, r]]
    pred = {}
    for r in relations:
        toks = [ex["rel_pred_tokens"][j, r, q] for q in range(ex["rel_pred_tokens"].shape[-1]) if ex["rel_pred_mask"][j, r, q]]
        pred[r] = torch.stack([matcher.relation_phrase(words[w]) for w in toks]).mean(0) if toks else matcher.unknown_predicate
    updated = {}
    for s in objects:
        messages = []
        for r in relations:
            su, ob = int(ex["rel_subj"][j, r]), int(ex["rel_obj"][j, r])
            if su == s:
                messages.append(matcher.active_edge(torch.cat([pred[r], x[ob]])))
            if ob == s:
                messages.append(matcher.passive_edge(torch.cat([pred[r], x[s]])))
        mean = torch.stack(messages).mean(0) if messages else torch.zeros_like(x[s])
        updated[s] = matcher.edge_norm(x[s] + mean)
    neighbours = []
    for s in objects:
        near = {s}
        for r in relations:
            su, ob = int(ex["rel_subj"][j, r]), int(ex["rel_obj"][j, r])
            if su == s:
                near.add(ob)
            if ob == s:
                near.add(su)
        neighbours.append(sorted(objects.index(q) for q in near))
    nodes = naive_stack(matcher.relation_attention, torch.stack([updated[s] for s in objects]), neighbours)
    caption = matcher.caption_out(naive_gpo(matcher.caption_pool, nodes))
    return caption, [entities[s] for s in objects]


def naive_cora(matcher: CORA, images: EncodedImages, captions: EncodedCaptions) -> torch.Tensor:
    from test_matcher_contract import naive_gpo

    out = torch.zeros(len(images), len(captions))
    for j in range(len(captions)):
        c = F.normalize(naive_caption(matcher, captions.features[j], captions.extra, j)[0], dim=0)
        for i in range(len(images)):
            v = F.normalize(naive_gpo(matcher.image_pool, images.features[i][images.mask[i]]), dim=0)
            out[i, j] = v @ c
    return out


# ---------------------------------------------------------------------------- tests


def test_entities_equal_the_per_object_loop():
    matcher = cora_matcher(entity_layers=2).eval()
    _, captions = cora_inputs(1, 5, seed=2)
    with torch.no_grad():
        emb = matcher.prepare_captions(captions).extra["cora_entity"]
        for j in range(5):
            _, ents = naive_caption(matcher, captions.features[j], captions.extra, j)
            valid = captions.extra["obj_mask"][j].nonzero().flatten()
            for e, s in zip(ents, valid):
                torch.testing.assert_close(emb[j, s], F.normalize(e, dim=0), atol=1e-5, rtol=0)


def test_grouping_by_object_count_gives_the_vectors_of_the_whole_padded_block():
    """In evaluation CORA composes captions with the same number of object slots together, each group
    cut to its own width: the caption and entity vectors equal those of the whole block padded to its
    widest scene graph (here 3 slots plus 4 empty ones), and the matrix is the same."""
    matcher = cora_matcher().eval()
    images, captions = cora_inputs(3, 9, seed=12)
    ex = dict(captions.extra)
    for key in ("obj_token", "obj_mask", "obj_attr_token", "obj_attr_mask"):  # 4 more padding slots
        pad = (0, 0, 0, 4) if ex[key].dim() == 3 else (0, 4)
        ex[key] = F.pad(ex[key], pad)
    ex["obj_mask"][4, 1:] = False  # captions of 1, 2 and 3 objects (and the empty one)
    ex["obj_mask"][5, 2:] = False
    ex["obj_attr_mask"] &= ex["obj_mask"].unsqueeze(-1)
    ex["rel_mask"] &= ex["obj_mask"].gather(1, ex["rel_subj"]) & ex["obj_mask"].gather(1, ex["rel_obj"])
    captions = EncodedCaptions(captions.features, captions.mask, None, ex)
    with torch.no_grad():
        caption, entity = matcher.compose(captions)
        whole_entity = matcher.compose_entities(captions)
        whole_caption = matcher.compose_caption(captions, whole_entity)
        scores = matcher(images, captions)
    valid = ex["obj_mask"]
    torch.testing.assert_close(caption, whole_caption, atol=1e-6, rtol=0)
    torch.testing.assert_close(entity[valid], whole_entity[valid], atol=1e-6, rtol=0)
    assert entity.shape == whole_entity.shape
    want = F.normalize(matcher.image_pool(images.features, images.mask), dim=-1) @ F.normalize(whole_caption, dim=-1).T
    torch.testing.assert_close(scores, want * valid.any(-1).float(), atol=1e-6, rtol=0)


def test_attributes_change_the_entity_and_without_them_an_object_is_composed_alone():
    matcher = cora_matcher().eval()
    _, captions = cora_inputs(1, 5, seed=4)
    ex = captions.extra
    without = {k: v for k, v in ex.items() if not k.startswith("obj_attr")}
    no_attr = EncodedCaptions(captions.features, captions.mask, None, {**ex, "obj_attr_mask": torch.zeros_like(ex["obj_attr_mask"])})
    with torch.no_grad():
        a = matcher.compose_entities(EncodedCaptions(captions.features, captions.mask, None, without))
        b = matcher.compose_entities(no_attr)
        c = matcher.compose_entities(captions)
    torch.testing.assert_close(a, b)  # no attribute tensors = attributes all masked
    has = ex["obj_attr_mask"].any(-1) & ex["obj_mask"]
    assert has.any()
    assert not torch.allclose(c[has], b[has])
    torch.testing.assert_close(c[~ex["obj_attr_mask"].any(-1)], b[~ex["obj_attr_mask"].any(-1)])


def test_empty_graph_scores_zero_and_relationless_captions_stay_finite():
    matcher = cora_matcher().train()
    images, captions = cora_inputs(3, 4, seed=6)
    captions.extra["rel_mask"][:] = False  # no caption has a relation
    s = matcher(images, captions)
    assert torch.isfinite(s).all()
    assert torch.equal(s[:, 1], torch.zeros(3))  # caption 1 has no object
    s.sum().backward()
    assert matcher.active_edge[0].weight.grad is None or torch.equal(matcher.active_edge[0].weight.grad, torch.zeros_like(matcher.active_edge[0].weight))


def test_relation_direction_matters():
    matcher = cora_matcher().eval()
    images, captions = cora_inputs(2, 5, seed=8)
    ex = captions.extra
    flipped = EncodedCaptions(captions.features, captions.mask, None, {**ex, "rel_subj": ex["rel_obj"], "rel_obj": ex["rel_subj"]})
    with torch.no_grad():
        s, sf = matcher(images, captions), matcher(images, flipped)
    has_rel = (ex["rel_mask"] & (ex["rel_subj"] != ex["rel_obj"])).any(-1)
    assert has_rel.any()
    assert not torch.allclose(s[:, has_rel], sf[:, has_rel])


def test_missing_graph_keys_say_what_to_set():
    matcher = cora_matcher()
    images, captions = cora_inputs(2, 2, seed=1)
    with pytest.raises(ValueError, match="scene_graphs true"):
        matcher(images, EncodedCaptions(captions.features, captions.mask, None, None))


def test_attribute_indices_from_a_parsed_caption():
    p = parsed("a red big car near a tree", [("car", 3), ("tree", 6)], [(0, "near", 1)])
    p.scene_graph.attributes = [(0, "red"), (0, "big"), (1, "green"), (0, "old")]
    out = text_graph_index(p, max_objects=4, max_relations=4, max_predicate_words=2, max_attributes=2)
    assert out["obj_attr_token"].tolist() == [[1, 2], [0, 0]]
    assert out["obj_attr_mask"].tolist() == [[True, True], [False, False]]  # "green" is not in the caption
    plain = text_graph_index(p, max_objects=4, max_relations=4, max_predicate_words=2)
    assert "obj_attr_token" not in plain
    truncated = text_graph_index(p, max_objects=4, max_relations=4, max_predicate_words=2, max_attributes=2, max_tokens=5)
    assert truncated["obj_attr_token"].shape == (1, 2)  # the tree is cut off with the caption
    batch = collate_text_scene_graphs([p, parsed("a dog", [("dog", 1)], [])], max_objects=3, max_relations=2,
                                      max_predicate_words=2, max_attributes=2)
    assert batch["obj_attr_token"].shape == (2, 3, 2) and not batch["obj_attr_mask"][1].any()


# ---------------------------------------------------------------------------- losses


class _Model:
    def __init__(self, matcher):
        self.matcher = matcher


class _Out:
    def __init__(self, images, captions):
        self.images, self.captions, self.sims = images, captions, None


class _Batch:
    def __init__(self, image_index):
        self.image_index = image_index


def naive_supcon(img, cap, ents, ent_row, image_ids, temperature):
    """The release's supervised contrastive loss, one anchor at a time."""
    targets = torch.cat([cap, ents])
    target_image = torch.cat([image_ids, image_ids[ent_row]])
    s = img @ targets.T / temperature
    pos = image_ids.unsqueeze(1) == target_image.unsqueeze(0)

    def side(scores, positives):
        per_anchor = []
        for a in range(scores.shape[0]):
            neg = scores[a][~positives[a]]
            terms = [scores[a, p] - torch.log(neg.exp().sum() + scores[a, p].exp()) for p in positives[a].nonzero().flatten()]
            per_anchor.append(-torch.stack(terms).mean())
        return torch.stack(per_anchor).mean()

    return side(s, pos) + side(s.T, pos.T)


def test_contrastive_and_specificity_terms_equal_their_formulas():
    matcher = cora_matcher().train()
    images, captions = cora_inputs(4, 4, seed=12)
    image_ids = torch.tensor([0, 1, 1, 2])
    model, out, batch = _Model(matcher), _Out(images, captions), _Batch(image_ids)
    matcher(images, captions)
    emb = matcher.embeddings(images, captions)
    assert emb.caption is matcher.embeddings(images, captions).caption  # the scored batch is reused
    ents, rows = emb.entity[emb.entity_mask], emb.entity_mask.nonzero()[:, 0]
    got = CoraContrastive(temperature=0.1)(model, batch, out, epoch=0)
    torch.testing.assert_close(got, naive_supcon(emb.image, emb.caption, ents, rows, image_ids, 0.1))
    spec = EntitySpecificityHinge(margin=0.35)(model, batch, out, epoch=0)
    want = torch.stack([(emb.image[b] @ e + 0.35 - emb.image[b] @ emb.caption[b]).clamp_min(0) for e, b in zip(ents, rows)]).mean()
    torch.testing.assert_close(spec, want)
    (got + spec).backward()
    assert matcher.entity_phrase[0].weight.grad is not None


def test_specificity_without_entities_is_none():
    matcher = cora_matcher().train()
    images, captions = cora_inputs(2, 2, seed=3)
    captions.extra["obj_mask"][:] = False
    out = _Out(images, captions)
    assert EntitySpecificityHinge()(_Model(matcher), _Batch(torch.arange(2)), out, epoch=0) is None
    assert torch.isfinite(CoraContrastive()(_Model(matcher), _Batch(torch.arange(2)), out, epoch=0))


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_one_epoch_fit_through_the_cli(tiny_synthscenes, tmp_path, monkeypatch):
    """configs/experiment/cora_synthscenes.yaml: preprocess, then one epoch of ``kgitm fit`` at a small
    size; the batches carry attributes found in the captions, every loss term is logged and finite."""
    from kgitm.cli import main, preprocess

    REPO = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    graphs = tmp_path / "graphs"
    assert preprocess.main(["--config", str(REPO / "configs/preprocess/synthscenes.yaml"), "--data-root", str(tiny_synthscenes),
                            "--out", str(graphs), "--progress", "false"]) == 0
    torch.manual_seed(0)
    run = tmp_path / "run"
    main(["fit", "--config", str(REPO / "configs/experiment/cora_synthscenes.yaml"),
          "--data.root", str(tiny_synthscenes), "--data.graph_store", str(graphs), "--data.batch_size", "32",
          "--model.embed_dim", "32", "--model.text_encoder.init_args.word_dim", "16",
          "--model.matcher.init_args.hidden_dim", "32", "--model.matcher.init_args.heads", "4",
          "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
          "--run_dir", str(run)])
    assert (run / "checkpoints" / "last.ckpt").exists()
    rows = list(csv.DictReader((run / "logs" / "metrics.csv").open()))
    logged = {k for r in rows for k, v in r.items() if v}
    for name in ("train/retrieval_loss", "train/cora_contrastive_loss", "train/cora_specificity_loss", "val/rsum"):
        assert name in logged, sorted(logged)
    assert all(math.isfinite(float(r["val/rsum"])) for r in rows if r.get("val/rsum"))

    from kgitm.lit.datamodule import PrecompDataModule

    dm = PrecompDataModule(root=str(tiny_synthscenes), graph_store=str(graphs), scene_graphs=True, visual_scene_graphs=False,
                           scene_graph_limits={"attributes": 4}, batch_size=64, diagnostics=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.graph is None and batch.captions.graph["obj_attr_mask"].any()
