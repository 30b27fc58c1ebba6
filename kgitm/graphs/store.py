"""Graph stores: parsed caption graphs and visual scene graphs as compact, fast-loading tensors.

One store per split and modality, in the spirit of PyG's ``InMemoryDataset`` (everything collated
into flat tensors plus per-item offsets) and, like PyG's ``Dataset``, with a provenance record that
says what built it. A store is a folder::

    graphs.pt         torch.save of a dict of tensors only (strings as UTF-8 bytes + offsets), so it
                      loads with torch.load(weights_only=True) and is memory-mapped
    provenance.json   parser and spaCy model name/version/options, source sha256, counts, config

The ``.pt`` bytes are deterministic (same input -> same file), which is what makes the
preprocessing job's resume and shard/merge checkable byte for byte.

Text store (:class:`GraphStore`, built by ``kgitm preprocess``): caption ``i`` -> its
:class:`~kgitm.graphs.types.ParsedCaption`; :meth:`GraphStore.dependency_adjacency` gives GSMN's
word graphs for a batch and :meth:`GraphStore.scene_graph_tensors` SGM's textual scene graphs.
Visual store (:class:`VisualGraphStore`): image ``i`` -> its
:class:`~kgitm.graphs.scene_graph_json.VisualSceneGraph` and the same batched tensors.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from kgitm.core.io import atomic_write_bytes, atomic_write_text, json_text, sha256_file
from kgitm.graphs.scene_graph_json import VisualSceneGraph
from kgitm.graphs.types import DependencyGraph, ParsedCaption, SceneGraph, SGObject

FORMAT_VERSION = 1
TENSORS_FILE = "graphs.pt"
PROVENANCE_FILE = "provenance.json"
REBUILD_HINT = "kgitm preprocess --config <your preprocess config> --overwrite"


class StaleStoreError(RuntimeError):
    """The store was built from other inputs or with another parser than the ones expected."""


# ------------------------------------------------------------------------------------ file helpers


def _zero_serialization_id(blob: bytes) -> bytes:
    """torch.save writes a random ``.data/serialization_id`` record; replace it by zeros (fixing the
    CRC in the local header, data descriptor and central directory) so equal tensors give equal bytes."""
    buf = bytearray(blob)
    zf = zipfile.ZipFile(io.BytesIO(blob))
    for info in zf.infolist():
        if not info.filename.endswith(".data/serialization_id"):
            continue
        name = info.filename.encode()
        off = info.header_offset
        n_len, x_len = struct.unpack_from("<HH", buf, off + 26)
        start = off + 30 + n_len + x_len
        new = b"0" * info.file_size
        crc = zlib.crc32(new) & 0xFFFFFFFF
        buf[start : start + info.file_size] = new
        if struct.unpack_from("<I", buf, off + 14)[0]:
            struct.pack_into("<I", buf, off + 14, crc)
        if info.flag_bits & 0x08:  # data descriptor after the data, with or without its signature
            d = start + info.file_size
            struct.pack_into("<I", buf, d + 4 if buf[d : d + 4] == b"PK\x07\x08" else d, crc)
        pos = buf.rfind(b"PK\x01\x02")
        while pos != -1:  # find this record's central directory entry (the directory is at the end)
            c_name_len = struct.unpack_from("<H", buf, pos + 28)[0]
            if bytes(buf[pos + 46 : pos + 46 + c_name_len]) == name:
                struct.pack_into("<I", buf, pos + 16, crc)
                break
            pos = buf.rfind(b"PK\x01\x02", 0, pos)
    return bytes(buf)


def save_tensors(tensors: Mapping[str, Tensor], path: str | os.PathLike) -> None:
    """Deterministic, atomic ``torch.save`` of a flat dict of tensors."""
    for k, v in tensors.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"store entry {k!r} is a {type(v).__name__}, only tensors are stored")
    buf = io.BytesIO()  # the archive's root folder is then always "archive", whatever the file name
    torch.save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, buf)
    atomic_write_bytes(path, _zero_serialization_id(buf.getvalue()))


def load_tensors(path: str | os.PathLike, *, mmap: bool = True) -> dict[str, Tensor]:
    """``torch.load(weights_only=True)`` of a store file (memory-mapped by default)."""
    return torch.load(path, weights_only=True, mmap=mmap, map_location="cpu")


def encode_strings(strings: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Strings -> (UTF-8 bytes, offsets).

    Shapes:
        Output: ``(total_bytes,)`` uint8 and ``(S + 1,)`` int64.
    """
    parts = [s.encode("utf-8") for s in strings]
    offsets = torch.zeros(len(parts) + 1, dtype=torch.long)
    if parts:
        offsets[1:] = torch.tensor([len(p) for p in parts], dtype=torch.long).cumsum(0)
    data = torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8) if offsets[-1] > 0 else torch.zeros(0, dtype=torch.uint8)
    return data.clone(), offsets


def decode_strings(data: Tensor, offsets: Tensor) -> list[str]:
    """Inverse of :func:`encode_strings`."""
    raw = data.numpy().tobytes()
    off = offsets.tolist()
    return [raw[off[i] : off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]


# ------------------------------------------------------------------------------------- provenance


def provenance_differences(stored: Mapping, expected: Mapping, prefix: str = "") -> list[str]:
    """Fields of ``expected`` (recursively) whose value differs in ``stored``, as one-line phrases."""
    diffs = []
    for key, want in expected.items():
        name = f"{prefix}{key}"
        have = stored.get(key, "<missing>") if isinstance(stored, Mapping) else "<missing>"
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            diffs += provenance_differences(have, want, prefix=f"{name}.")
        elif have != want:
            diffs.append(f"{name} is {have!r} in the store but {want!r} is expected")
    return diffs


def read_provenance(folder: str | os.PathLike) -> dict:
    with open(Path(folder) / PROVENANCE_FILE, encoding="utf-8") as f:
        return json.load(f)


def _check_store(folder: Path, expected: Mapping | None, kind: str) -> dict:
    if not (folder / TENSORS_FILE).exists() or not (folder / PROVENANCE_FILE).exists():
        raise FileNotFoundError(f"no complete {kind} store at {folder} (graphs.pt + provenance.json); build it with: {REBUILD_HINT}")
    prov = read_provenance(folder)
    if prov.get("format_version") != FORMAT_VERSION:
        expected = {"format_version": FORMAT_VERSION, **(expected or {})}
    if expected:
        diffs = provenance_differences(prov, expected)
        if diffs:
            cmd = prov.get("rebuild_command", REBUILD_HINT)
            raise StaleStoreError(f"stale {kind} store {folder}: {'; '.join(diffs)}; rebuild with: {cmd}")
    return prov


# ------------------------------------------------------------------------------- batched segments


def _segments(offsets: Tensor, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Positions of the items of the selected segments, the segment (batch) id of each, and counts."""
    start = offsets[indices]
    counts = offsets[indices + 1] - start
    batch = torch.repeat_interleave(torch.arange(len(indices)), counts)
    first = torch.cumsum(counts, 0) - counts
    pos = torch.arange(int(counts.sum())) - torch.repeat_interleave(first, counts) + torch.repeat_interleave(start, counts)
    return pos, batch, counts


def _as_index(indices: Sequence[int] | Tensor, n: int) -> Tensor:
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise IndexError(f"index out of range for a store of {n} items")
    return idx % max(n, 1)


@dataclass
class SceneGraphTensors:
    """A batch of scene graphs (text or visual) as flat tensors, PyG-style (``batch`` vectors).

    Object, attribute and relation indices are batch-global (object ``k`` of the batch is row ``k``).

    Attributes:
        num_graphs: ``B``.
        object_labels: vocabulary ids of the object names / class labels.
        object_batch: graph of each object.
        attribute_object: object of each attribute; attribute_labels: its vocabulary id.
        attribute_batch: graph of each attribute.
        relation_index: ``(subject, object)`` of each relation.
        relation_labels: predicate vocabulary ids; relation_batch: graph of each relation.
        vocab: id -> string for all labels, attributes and predicates of the store.
        object_spans: text only, ``[start, end)`` token span of each object.
        boxes: visual only, pixel corner boxes; region_index: visual only, BUTD region or -1.

    Shapes:
        object_*: ``(O,)``; attribute_*: ``(A,)``; relation_index: ``(2, T)``; relation_labels and
        relation_batch: ``(T,)``; object_spans: ``(O, 2)``; boxes: ``(O, 4)``; region_index: ``(O,)``.
    """

    num_graphs: int
    object_labels: Tensor
    object_batch: Tensor
    attribute_object: Tensor
    attribute_labels: Tensor
    attribute_batch: Tensor
    relation_index: Tensor
    relation_labels: Tensor
    relation_batch: Tensor
    vocab: list[str]
    object_spans: Tensor | None = None
    boxes: Tensor | None = None
    region_index: Tensor | None = None

    def to(self, device: torch.device | str) -> "SceneGraphTensors":
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        return SceneGraphTensors(**moved)


def _gather_scene_graphs(t: Mapping[str, Tensor], idx: Tensor, vocab: list[str], extra_obj: Sequence[str]) -> dict:
    opos, obatch, ocounts = _segments(t["obj_offsets"], idx)
    obj_base = torch.cumsum(ocounts, 0) - ocounts  # first batch row of each graph's objects
    apos, abatch, _ = _segments(t["attr_offsets"], idx)
    rpos, rbatch, _ = _segments(t["rel_offsets"], idx)
    rel = t["rel_triples"][rpos]
    return dict(
        num_graphs=len(idx),
        object_labels=t["obj_label_ids"][opos],
        object_batch=obatch,
        attribute_object=t["attr_object"][apos] + obj_base[abatch],
        attribute_labels=t["attr_label_ids"][apos],
        attribute_batch=abatch,
        relation_index=torch.stack([rel[:, 0] + obj_base[rbatch], rel[:, 2] + obj_base[rbatch]]),
        relation_labels=rel[:, 1],
        relation_batch=rbatch,
        vocab=vocab,
        **{name: t[key][opos] for name, key in extra_obj},
    )


class _Vocab:
    """Strings -> provisional ids in first-seen order; remapped to sorted order at the end."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, s: str) -> int:
        i = self.ids.get(s)
        if i is None:
            i = self.ids[s] = len(self.ids)
        return i

    def finish(self) -> tuple[list[str], Tensor]:
        words = sorted(self.ids)
        remap = torch.empty(len(words), dtype=torch.long)
        for new, w in enumerate(words):
            remap[self.ids[w]] = new
        return words, remap


def _offsets(counts: array) -> Tensor:
    out = torch.zeros(len(counts) + 1, dtype=torch.long)
    if len(counts):
        out[1:] = torch.tensor(counts, dtype=torch.long).cumsum(0)
    return out


def _from_array(a: array, dtype: torch.dtype) -> Tensor:
    if len(a) == 0:
        return torch.zeros(0, dtype=dtype)
    return torch.frombuffer(a, dtype=dtype).clone()


def _long(a: array, *shape: int) -> Tensor:
    t = _from_array(a, torch.long)
    return t.view(-1, *shape) if shape else t


# --------------------------------------------------------------------------------- text graph store


def validate_parsed(pc: ParsedCaption, *, where: str) -> None:
    """Check the indices of a parsed caption (the store relies on them); raises ValueError naming ``where``."""
    n_tok = len(pc.dependency.tokens)
    if len(pc.dependency.edges) != len(pc.dependency.labels):
        raise ValueError(f"{where}: {len(pc.dependency.edges)} dependency edges but {len(pc.dependency.labels)} labels")
    for h, d in pc.dependency.edges:
        if not (0 <= h < n_tok and 0 <= d < n_tok):
            raise ValueError(f"{where}: dependency edge ({h}, {d}) outside the caption's {n_tok} tokens")
    n_obj = len(pc.scene_graph.objects)
    for o in pc.scene_graph.objects:
        if len(o.span) != 2:
            raise ValueError(f"{where}: object {o.name!r} has span {o.span!r}, expected (start, end)")
    for a, _ in pc.scene_graph.attributes:
        if not 0 <= a < n_obj:
            raise ValueError(f"{where}: attribute of object {a}, but the scene graph has {n_obj} objects")
    for s, _, o in pc.scene_graph.relations:
        if not (0 <= s < n_obj and 0 <= o < n_obj):
            raise ValueError(f"{where}: relation ({s}, {o}) outside the scene graph's {n_obj} objects")


class TextStoreBuilder:
    """Streams parsed captions into the collated tensors of a :class:`GraphStore` (low memory)."""

    def __init__(self) -> None:
        self.captions: list[str] = []
        self.tokens, self.n_tokens = array("q"), array("q")
        self.dep, self.dep_labels, self.n_dep = array("q"), array("q"), array("q")
        self.obj_labels, self.obj_spans, self.obj_plural, self.obj_counts, self.n_obj = (array("q") for _ in range(5))
        self.attr_obj, self.attr_labels, self.n_attr = array("q"), array("q"), array("q")
        self.rel, self.n_rel = array("q"), array("q")
        self.token_vocab, self.dep_vocab, self.sg_vocab = _Vocab(), _Vocab(), _Vocab()

    def add(self, pc: ParsedCaption) -> None:
        dep, sg = pc.dependency, pc.scene_graph
        self.captions.append(pc.caption)
        self.tokens.extend(self.token_vocab(t) for t in dep.tokens)
        self.n_tokens.append(len(dep.tokens))
        for (h, d), lab in zip(dep.edges, dep.labels):
            self.dep.extend((int(h), int(d)))
            self.dep_labels.append(self.dep_vocab(lab))
        self.n_dep.append(len(dep.edges))
        for o in sg.objects:
            self.obj_labels.append(self.sg_vocab(o.name))
            self.obj_spans.extend((int(o.span[0]), int(o.span[1])))
            self.obj_plural.append(int(bool(o.plural)))
            self.obj_counts.append(-1 if o.count is None else int(o.count))
        self.n_obj.append(len(sg.objects))
        for a, lemma in sg.attributes:
            self.attr_obj.append(int(a))
            self.attr_labels.append(self.sg_vocab(lemma))
        self.n_attr.append(len(sg.attributes))
        for s, p, o in sg.relations:
            self.rel.extend((int(s), self.sg_vocab(p), int(o)))
        self.n_rel.append(len(sg.relations))

    def finish(self) -> dict[str, Tensor]:
        tok_words, tok_remap = self.token_vocab.finish()
        dep_words, dep_remap = self.dep_vocab.finish()
        sg_words, sg_remap = self.sg_vocab.finish()
        rel = _long(self.rel, 3)
        if len(rel):
            rel[:, 1] = sg_remap[rel[:, 1]]
        cap_bytes, cap_off = encode_strings(self.captions)
        out = {"format_version": torch.tensor(FORMAT_VERSION), "caption_bytes": cap_bytes, "caption_offsets": cap_off}
        out["token_ids"] = tok_remap[_long(self.tokens)] if len(self.tokens) else _long(self.tokens)
        out["token_offsets"] = _offsets(self.n_tokens)
        out["dep_edges"] = _long(self.dep, 2)
        out["dep_label_ids"] = dep_remap[_long(self.dep_labels)] if len(self.dep_labels) else _long(self.dep_labels)
        out["dep_offsets"] = _offsets(self.n_dep)
        out["obj_label_ids"] = sg_remap[_long(self.obj_labels)] if len(self.obj_labels) else _long(self.obj_labels)
        out["obj_spans"] = _long(self.obj_spans, 2)
        out["obj_plural"] = _long(self.obj_plural).bool()
        out["obj_counts"] = _long(self.obj_counts)
        out["obj_offsets"] = _offsets(self.n_obj)
        out["attr_object"] = _long(self.attr_obj)
        out["attr_label_ids"] = sg_remap[_long(self.attr_labels)] if len(self.attr_labels) else _long(self.attr_labels)
        out["attr_offsets"] = _offsets(self.n_attr)
        out["rel_triples"] = rel
        out["rel_offsets"] = _offsets(self.n_rel)
        for name, words in (("token_vocab", tok_words), ("dep_label_vocab", dep_words), ("sg_vocab", sg_words)):
            out[f"{name}_bytes"], out[f"{name}_offsets"] = encode_strings(words)
        return out


def text_store_counts(tensors: Mapping[str, Tensor]) -> dict[str, int]:
    """Counts recorded in the provenance: captions, empty captions, empty scene graphs, no edges."""
    n = len(tensors["caption_offsets"]) - 1
    return {
        "captions": n,
        "empty_captions": int((tensors["token_offsets"].diff() == 0).sum()),
        "empty_scene_graphs": int((tensors["obj_offsets"].diff() == 0).sum()),
        "captions_without_edges": int((tensors["dep_offsets"].diff() == 0).sum()),
        "dependency_edges": int(tensors["dep_edges"].size(0)),
        "objects": int(tensors["obj_label_ids"].numel()),
        "relations": int(tensors["rel_triples"].size(0)),
    }


class _Store:
    """What both stores share: a folder with ``graphs.pt`` and ``provenance.json``, saved atomically
    (provenance last) and loaded only when the provenance matches what the caller expects."""

    KIND = "graph"
    tensors: dict[str, Tensor]
    provenance: dict

    def save(self, folder: str | os.PathLike, provenance: Mapping | None = None) -> None:
        """Write ``graphs.pt`` then ``provenance.json`` (each atomically; provenance last)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_tensors(self.tensors, folder / TENSORS_FILE)
        atomic_write_text(folder / PROVENANCE_FILE, json_text(dict(provenance or self.provenance)))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        expected_provenance: Mapping | None = None,
        source_file: str | os.PathLike | None = None,
    ) -> "_Store":
        """Load a store folder, refusing a stale one.

        Args:
            path: the store folder (``{out}/{split}/text`` or ``{out}/{split}/visual``).
            expected_provenance: fields the provenance must have (nested dicts compare field by
                field), e.g. ``{"parser": {"spacy_model": "en_core_web_sm"}}``; any difference raises
                :class:`StaleStoreError` naming the field and the rebuild command.
            source_file: the caption or scene-graph file the store must have been built from (its sha256
                is checked).
        """
        folder = Path(path)
        expected = dict(expected_provenance or {})
        if source_file is not None:
            expected["source"] = {**expected.get("source", {}), "sha256": sha256_file(source_file)}
        prov = _check_store(folder, expected, cls.KIND)
        return cls(load_tensors(folder / TENSORS_FILE), prov, folder)


class GraphStore(_Store):
    """The parsed caption graphs of one split (built by ``kgitm preprocess``).

    ``store[i]`` is the :class:`~kgitm.graphs.types.ParsedCaption` of caption ``i`` (line ``i`` of
    ``{split}_caps.txt``). Token indices are positions in :func:`kgitm.core.text.tokenize`.

    Example::

        store = GraphStore.load("graphs/synthscenes/train/text", source_file="data/synthscenes/train_caps.txt")
        adj = store.dependency_adjacency(caption_ids, max_len=L)     # (B, L, L) bool, GSMN
        sg = store.scene_graph_tensors(caption_ids)                  # SGM textual scene graphs
    """

    KIND = "caption graph"

    def __init__(self, tensors: dict[str, Tensor], provenance: dict | None = None, path: Path | None = None) -> None:
        self.tensors = tensors
        self.provenance = provenance or {}
        self.path = path
        self._token_vocab = decode_strings(tensors["token_vocab_bytes"], tensors["token_vocab_offsets"])
        self._dep_vocab = decode_strings(tensors["dep_label_vocab_bytes"], tensors["dep_label_vocab_offsets"])
        self._sg_vocab = decode_strings(tensors["sg_vocab_bytes"], tensors["sg_vocab_offsets"])
        self._cap_bytes = tensors["caption_bytes"].numpy().tobytes()

    @classmethod
    def build(cls, parsed: Iterable[ParsedCaption]) -> "GraphStore":
        """An in-memory store (no provenance) from parsed captions."""
        b = TextStoreBuilder()
        for i, pc in enumerate(parsed):
            validate_parsed(pc, where=f"caption {i}")
            b.add(pc)
        return cls(b.finish())


    def __len__(self) -> int:
        return len(self.tensors["caption_offsets"]) - 1

    @property
    def token_vocab(self) -> list[str]:
        return self._token_vocab

    @property
    def dependency_label_vocab(self) -> list[str]:
        """Dependency label id -> label (sorted)."""
        return self._dep_vocab

    @property
    def scene_graph_vocab(self) -> list[str]:
        """Vocabulary id -> lemma for object names, attributes and predicates (sorted)."""
        return self._sg_vocab

    @property
    def num_tokens(self) -> Tensor:
        """Tokens per caption, shape ``(N,)``."""
        return self.tensors["token_offsets"].diff()

    def _range(self, key: str, i: int) -> tuple[int, int]:
        off = self.tensors[key]
        return int(off[i]), int(off[i + 1])

    def __getitem__(self, i: int) -> ParsedCaption:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"caption {i} out of range for a store of {n} captions")
        i %= n
        t = self.tensors
        c0, c1 = self._range("caption_offsets", i)
        t0, t1 = self._range("token_offsets", i)
        d0, d1 = self._range("dep_offsets", i)
        o0, o1 = self._range("obj_offsets", i)
        a0, a1 = self._range("attr_offsets", i)
        r0, r1 = self._range("rel_offsets", i)
        sg = self._sg_vocab
        return ParsedCaption(
            caption=self._cap_bytes[c0:c1].decode("utf-8"),
            dependency=DependencyGraph(
                tokens=[self._token_vocab[k] for k in t["token_ids"][t0:t1].tolist()],
                edges=[tuple(e) for e in t["dep_edges"][d0:d1].tolist()],
                labels=[self._dep_vocab[k] for k in t["dep_label_ids"][d0:d1].tolist()],
            ),
            scene_graph=SceneGraph(
                objects=[
                    SGObject(name=sg[name], span=tuple(span), plural=bool(pl), count=None if cnt < 0 else cnt)
                    for name, span, pl, cnt in zip(
                        t["obj_label_ids"][o0:o1].tolist(),
                        t["obj_spans"][o0:o1].tolist(),
                        t["obj_plural"][o0:o1].tolist(),
                        t["obj_counts"][o0:o1].tolist(),
                    )
                ],
                attributes=[
                    (a, sg[lab]) for a, lab in zip(t["attr_object"][a0:a1].tolist(), t["attr_label_ids"][a0:a1].tolist())
                ],
                relations=[(s, sg[p], o) for s, p, o in t["rel_triples"][r0:r1].tolist()],
            ),
        )

    def dependency_adjacency(
        self, indices: Sequence[int] | Tensor, max_len: int, *, self_loops: bool = False
    ) -> Tensor:
        """Symmetric dependency adjacency of a batch of captions (GSMN's sparse text graph).

        Args:
            indices: caption indices of the batch.
            max_len: ``L``, the padded length of the batch; edges touching token ``>= L`` are dropped.
            self_loops: also set ``adj[b, j, j]`` for the caption's real tokens (default False).

        Shapes:
            indices: ``(B,)``. Output: ``(B, L, L)`` bool, ``adj[b, h, d] == adj[b, d, h]``.
        """
        idx = _as_index(indices, len(self))
        pos, batch, _ = _segments(self.tensors["dep_offsets"], idx)
        edges = self.tensors["dep_edges"][pos]
        keep = (edges < max_len).all(dim=1) & (edges[:, 0] != edges[:, 1])
        b, h, d = batch[keep], edges[keep, 0], edges[keep, 1]
        adj = torch.zeros(len(idx), max_len, max_len, dtype=torch.bool)
        adj[b, h, d] = True
        adj[b, d, h] = True
        if self_loops:
            n_tok = self.num_tokens[idx].clamp_max(max_len)
            diag = torch.arange(max_len).unsqueeze(0) < n_tok.unsqueeze(1)
            adj |= torch.diag_embed(diag)
        return adj

    def dependency_edges(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Labelled dependency edges of a batch, for typed graph layers.

        Returns:
            ``(edges, label_ids, batch)``: ``(head, dependent)`` per caption (caption-local token
            indices), dependency label ids (see :attr:`dependency_label_vocab`), caption of each edge.

        Shapes:
            edges: ``(E, 2)``; label_ids, batch: ``(E,)``.
        """
        idx = _as_index(indices, len(self))
        pos, batch, _ = _segments(self.tensors["dep_offsets"], idx)
        return self.tensors["dep_edges"][pos], self.tensors["dep_label_ids"][pos], batch

    def scene_graph_tensors(self, indices: Sequence[int] | Tensor) -> SceneGraphTensors:
        """The textual scene graphs of a batch of captions (SGM), with ``object_spans``."""
        idx = _as_index(indices, len(self))
        return SceneGraphTensors(**_gather_scene_graphs(self.tensors, idx, self._sg_vocab, (("object_spans", "obj_spans"),)))


# ------------------------------------------------------------------------------- visual graph store


class VisualStoreBuilder:
    """Collates :class:`VisualSceneGraph` objects into the tensors of a :class:`VisualGraphStore`."""

    def __init__(self) -> None:
        self.image_ids: list[str] = []
        self.has_regions, self.has_scores = array("q"), array("q")
        self.obj_labels, self.obj_ids, self.obj_regions, self.n_obj = (array("q") for _ in range(4))
        self.boxes = array("f")
        self.attr_obj, self.attr_labels, self.n_attr = array("q"), array("q"), array("q")
        self.rel, self.n_rel = array("q"), array("q")
        self.rel_scores = array("d")
        self.vocab = _Vocab()

    def add(self, g: VisualSceneGraph) -> None:
        self.image_ids.append(g.image_id)
        n = g.num_objects
        self.obj_labels.extend(self.vocab(x) for x in g.labels)
        self.obj_ids.extend(g.object_ids if g.object_ids else range(n))
        self.obj_regions.extend(g.region_index if g.region_index is not None else [-1] * n)
        self.has_regions.append(int(g.region_index is not None))
        self.boxes.extend(g.boxes.float().reshape(-1).tolist())
        self.n_obj.append(n)
        for j, attrs in enumerate(g.attributes):
            for a in attrs:
                self.attr_obj.append(j)
                self.attr_labels.append(self.vocab(a))
        self.n_attr.append(sum(len(a) for a in g.attributes))
        for s, p, o in g.relations:
            self.rel.extend((int(s), self.vocab(p), int(o)))
        self.rel_scores.extend(g.relation_scores if g.relation_scores is not None else [float("nan")] * len(g.relations))
        self.has_scores.append(int(g.relation_scores is not None))
        self.n_rel.append(len(g.relations))

    def finish(self) -> dict[str, Tensor]:
        words, remap = self.vocab.finish()
        rel = _long(self.rel, 3)
        if len(rel):
            rel[:, 1] = remap[rel[:, 1]]
        out = {"format_version": torch.tensor(FORMAT_VERSION)}
        out["image_id_bytes"], out["image_id_offsets"] = encode_strings(self.image_ids)
        out["image_has_regions"] = _long(self.has_regions).bool()
        out["image_has_scores"] = _long(self.has_scores).bool()
        out["obj_label_ids"] = remap[_long(self.obj_labels)] if len(self.obj_labels) else _long(self.obj_labels)
        out["obj_ids"] = _long(self.obj_ids)
        out["obj_region_index"] = _long(self.obj_regions)
        out["obj_boxes"] = _from_array(self.boxes, torch.float32).view(-1, 4)
        out["obj_offsets"] = _offsets(self.n_obj)
        out["attr_object"] = _long(self.attr_obj)
        out["attr_label_ids"] = remap[_long(self.attr_labels)] if len(self.attr_labels) else _long(self.attr_labels)
        out["attr_offsets"] = _offsets(self.n_attr)
        out["rel_triples"] = rel
        out["rel_scores"] = _from_array(self.rel_scores, torch.float64)
        out["rel_offsets"] = _offsets(self.n_rel)
        out["vocab_bytes"], out["vocab_offsets"] = encode_strings(words)
        return out


def visual_store_counts(tensors: Mapping[str, Tensor]) -> dict[str, int]:
    return {
        "images": len(tensors["image_id_offsets"]) - 1,
        "empty_scene_graphs": int((tensors["obj_offsets"].diff() == 0).sum()),
        "images_without_relations": int((tensors["rel_offsets"].diff() == 0).sum()),
        "objects": int(tensors["obj_label_ids"].numel()),
        "relations": int(tensors["rel_triples"].size(0)),
    }


class VisualGraphStore(_Store):
    """The visual scene graphs of one split (image ``i`` = row ``i`` of the precomputed features).

    Example::

        vstore = VisualGraphStore.load("graphs/synthscenes/train/visual")
        sg = vstore.scene_graph_tensors(image_ids)   # boxes, region_index, labels, relations
    """

    KIND = "visual scene graph"

    def __init__(self, tensors: dict[str, Tensor], provenance: dict | None = None, path: Path | None = None) -> None:
        self.tensors = tensors
        self.provenance = provenance or {}
        self.path = path
        self.vocab = decode_strings(tensors["vocab_bytes"], tensors["vocab_offsets"])
        self.image_ids = decode_strings(tensors["image_id_bytes"], tensors["image_id_offsets"])

    @classmethod
    def build(cls, graphs: Iterable[VisualSceneGraph]) -> "VisualGraphStore":
        b = VisualStoreBuilder()
        for g in graphs:
            b.add(g)
        return cls(b.finish())


    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> VisualSceneGraph:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image {i} out of range for a store of {n} images")
        i %= n
        t = self.tensors
        o0, o1 = int(t["obj_offsets"][i]), int(t["obj_offsets"][i + 1])
        a0, a1 = int(t["attr_offsets"][i]), int(t["attr_offsets"][i + 1])
        r0, r1 = int(t["rel_offsets"][i]), int(t["rel_offsets"][i + 1])
        attrs: list[list[str]] = [[] for _ in range(o1 - o0)]
        for j, lab in zip(t["attr_object"][a0:a1].tolist(), t["attr_label_ids"][a0:a1].tolist()):
            attrs[j].append(self.vocab[lab])
        return VisualSceneGraph(
            image_id=self.image_ids[i],
            labels=[self.vocab[k] for k in t["obj_label_ids"][o0:o1].tolist()],
            attributes=attrs,
            boxes=t["obj_boxes"][o0:o1].clone(),
            region_index=t["obj_region_index"][o0:o1].tolist() if bool(t["image_has_regions"][i]) else None,
            relations=[(s, self.vocab[p], o) for s, p, o in t["rel_triples"][r0:r1].tolist()],
            object_ids=t["obj_ids"][o0:o1].tolist(),
            relation_scores=t["rel_scores"][r0:r1].tolist() if bool(t["image_has_scores"][i]) else None,
        )

    def scene_graph_tensors(self, indices: Sequence[int] | Tensor) -> SceneGraphTensors:
        """The visual scene graphs of a batch of images (SGM), with ``boxes`` and ``region_index``."""
        idx = _as_index(indices, len(self))
        extra = (("boxes", "obj_boxes"), ("region_index", "obj_region_index"))
        return SceneGraphTensors(**_gather_scene_graphs(self.tensors, idx, self.vocab, extra))
