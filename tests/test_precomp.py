"""The precomputed-layout reader: valid data opens, every malformed input gets a one-line error that
names the file and the mismatch."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from kgitm.data.precomp import DataFormatError, PrecompSplit
from kgitm.core.text import Vocabulary


def write_split(root: Path, split: str = "test", *, n: int = 3, k: int = 5, r: int = 4, d: int = 6, boxes: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(root / f"{split}_ims.npy", rng.normal(size=(n, r, d)).astype(np.float32))
    (root / f"{split}_caps.txt").write_text("".join(f"a dog number {i} on a mat\n" for i in range(n * k)))
    (root / f"{split}_ids.txt").write_text("".join(f"img{i}\n" for i in range(n)))
    if boxes:
        b = np.tile(np.array([10, 20, 50, 80], np.float32), (n, r, 1))
        np.save(root / f"{split}_ims_bbx.npy", b)
        np.save(root / f"{split}_ims_size.npy", np.full((n, 2), 100.0, np.float32))


def test_valid_split_opens_memory_mapped(tmp_path):
    write_split(tmp_path)
    s = PrecompSplit(tmp_path, "test")
    assert (s.num_images, s.num_captions, s.num_regions, s.feature_dim) == (3, 15, 4, 6)
    assert isinstance(s.images, np.memmap)
    assert s.image_of_caption(14) == 2 and s.ids == ["img0", "img1", "img2"]
    assert s.boxes.shape == (3, 4, 4) and s.sizes.shape == (3, 2)


def test_other_caption_counts_per_image(tmp_path):
    write_split(tmp_path, k=2)
    assert PrecompSplit(tmp_path, "test", captions_per_image=2).num_captions == 6
    with pytest.raises(DataFormatError, match=r"test_caps.txt: expected 5 x 3 = 15 captions .* found 6; set captions_per_image=2"):
        PrecompSplit(tmp_path, "test")


def test_missing_split_file(tmp_path):
    write_split(tmp_path)
    with pytest.raises(DataFormatError, match=r"dev_ims.npy: missing"):
        PrecompSplit(tmp_path, "dev")
    with pytest.raises(DataFormatError, match="data folder not found; point --data.root at a folder in the precomputed layout"):
        PrecompSplit(tmp_path / "nope", "test")


def test_caption_count_not_a_multiple(tmp_path):
    write_split(tmp_path)
    with open(tmp_path / "test_caps.txt", "a") as f:
        f.write("one more caption\n")
    with pytest.raises(DataFormatError, match="must be a multiple of the image count"):
        PrecompSplit(tmp_path, "test")


def test_empty_caption_file(tmp_path):
    write_split(tmp_path)
    (tmp_path / "test_caps.txt").write_text("")
    with pytest.raises(DataFormatError, match="test_caps.txt: empty caption file"):
        PrecompSplit(tmp_path, "test")


def test_wrong_shapes(tmp_path):
    write_split(tmp_path)
    np.save(tmp_path / "test_ims.npy", np.zeros((3, 4, 5, 6), np.float32))
    with pytest.raises(DataFormatError, match=r"test_ims.npy: expected shape \(images, regions, dim\) or \(images, dim\), found \(3, 4, 5, 6\)"):
        PrecompSplit(tmp_path, "test")
    write_split(tmp_path)
    np.save(tmp_path / "test_ims_bbx.npy", np.zeros((3, 5, 4), np.float32))
    with pytest.raises(DataFormatError, match=r"test_ims_bbx.npy: expected shape \(3, 4, 4\)"):
        PrecompSplit(tmp_path, "test")
    write_split(tmp_path)
    (tmp_path / "test_ids.txt").write_text("a\nb\n")
    with pytest.raises(DataFormatError, match="test_ids.txt: expected 3 image ids"):
        PrecompSplit(tmp_path, "test")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_named_by_index(tmp_path, bad):
    write_split(tmp_path)
    x = np.load(tmp_path / "test_ims.npy")
    x[2, 1, 3] = bad
    np.save(tmp_path / "test_ims.npy", x)
    with pytest.raises(DataFormatError, match=r"non-finite feature .* at image 2, region 1, dim 3"):
        PrecompSplit(tmp_path, "test")


def test_pickled_sizes_refused(tmp_path):
    write_split(tmp_path)
    sizes = np.array([{"image_w": 100, "image_h": 100}] * 3, dtype=object)
    np.save(tmp_path / "test_ims_size.npy", sizes, allow_pickle=True)
    with pytest.raises(DataFormatError, match="holds Python objects"):
        PrecompSplit(tmp_path, "test")


def test_boxes_required(tmp_path):
    write_split(tmp_path, boxes=False)
    assert PrecompSplit(tmp_path, "test").boxes is None
    with pytest.raises(DataFormatError, match="needs boxes"):
        PrecompSplit(tmp_path, "test", require_boxes=True)


def test_non_utf8_captions_name_the_line(tmp_path):
    write_split(tmp_path)
    (tmp_path / "test_caps.txt").write_bytes(b"ok\nfine\n\xff bad\n")
    with pytest.raises(DataFormatError, match=r"test_caps.txt:3: not valid UTF-8"):
        PrecompSplit(tmp_path, "test")


def test_vocabulary_from_training_captions_only():
    v = Vocabulary.build(["a dog runs", "a cat"])
    assert v.itos[:3] == ["<pad>", "<unk>", "a"]
    assert v.encode(["dog", "zebra"]) == [v.stoi["dog"], 1]


def _naive_first_non_finite(x: np.ndarray):
    for i in range(x.shape[0]):
        for r in range(x.shape[1]):
            for d in range(x.shape[2]):
                if not np.isfinite(x[i, r, d]):
                    return i, r, d
    return None


@pytest.mark.parametrize("chunk_bytes", [1, 100, 1 << 20])
@pytest.mark.parametrize("where", [(0, 0, 0), (6, 3, 5), (4, 2, 1)])
def test_chunked_scan_finds_what_a_plain_loop_finds(tmp_path, chunk_bytes, where):
    from kgitm.data.precomp import scan_finite

    x = np.random.default_rng(1).normal(size=(7, 4, 6)).astype(np.float32)
    x[where] = np.nan
    x[6, 3, 5] = np.inf  # a later one too: the first is reported
    np.save(tmp_path / "f.npy", x)
    i, r, d = _naive_first_non_finite(x)
    with pytest.raises(DataFormatError, match=rf"at image {i}, region {r}, dim {d};"):
        scan_finite(tmp_path / "f.npy", x.shape, x.dtype, chunk_bytes=chunk_bytes)


def test_a_file_that_passed_is_not_scanned_again_until_it_changes(tmp_path, monkeypatch):
    import kgitm.data.precomp as precomp

    write_split(tmp_path)
    PrecompSplit(tmp_path, "test")
    monkeypatch.setattr(precomp, "_scan_file", lambda *a, **k: pytest.fail("scanned again"))
    PrecompSplit(tmp_path, "test")  # recorded: no second scan
    monkeypatch.undo()
    x = np.load(tmp_path / "test_ims.npy")
    x[1, 0, 0] = np.nan
    np.save(tmp_path / "test_ims.npy", x)  # changed: scanned again, and refused
    with pytest.raises(DataFormatError, match="at image 1, region 0, dim 0"):
        PrecompSplit(tmp_path, "test")


def test_a_split_pickles_without_its_features_and_reopens_them(tmp_path):
    import pickle

    write_split(tmp_path, n=50, r=8, d=64)
    s = PrecompSplit(tmp_path, "test")
    blob = pickle.dumps(s)
    assert len(blob) < s.images.nbytes / 4  # the features are not in it
    t = pickle.loads(blob)
    assert isinstance(t.images, np.memmap) and np.array_equal(t.images, s.images) and np.array_equal(t.boxes, s.boxes)
    assert t.captions == s.captions


def test_worker_processes_give_the_batches_of_the_main_process(tiny_synthscenes):
    import torch

    from kgitm.lit.datamodule import PrecompDataModule

    def batches(workers: int) -> list:
        dm = PrecompDataModule(str(tiny_synthscenes), num_workers=workers, eval_batch_size=16, pin_memory=False)
        loader = dm.val_dataloader()
        assert loader.num_workers == workers and loader.persistent_workers == (workers > 0)
        return [(b.images.features.clone(), b.captions.token_ids.clone(), b.caption_index.clone()) for b in loader]

    one, two = batches(0), batches(2)
    assert len(one) == len(two) > 1
    for a, b in zip(one, two):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_batched_fetch_gives_the_per_item_batch(tiny_synthscenes):
    """``__getitems__`` reads a batch's features in one block; the batch equals the per-item one."""
    import dataclasses

    import torch

    from kgitm.lit.datamodule import PrecompDataModule

    dm = PrecompDataModule(str(tiny_synthscenes), pin_memory=False)
    ds = dm.train_dataloader().dataset
    collate = ds.collator()
    ks = [7, 3, 3, 40, 0, 11]  # repeats and any order
    one, two = collate([ds[k] for k in ks]), collate(ds.__getitems__(ks))

    def same(a, b) -> bool:
        if isinstance(a, torch.Tensor):
            return torch.equal(a, b)
        if dataclasses.is_dataclass(a):
            return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
        return a == b

    assert same(one, two)
    assert two.images.features.shape[0] == len(ks) and torch.equal(two.images.region_mask, (two.images.features.abs().sum(-1) > 0))


def test_positioned_reads_give_the_memory_mapped_rows(tmp_path):
    write_split(tmp_path, n=9, r=5, d=7)
    s = PrecompSplit(tmp_path, "test")
    rows = np.array([8, 0, 3, 3, 5])
    got = s.read_images(rows)
    assert got.dtype == np.float32 and np.array_equal(got, np.asarray(s.images[rows]))
    with pytest.raises(IndexError, match="out of range 0..8"):
        s.read_images(np.array([9]))


def test_mostly_empty_images_are_measured(tmp_path):
    write_split(tmp_path, n=10)
    x = np.load(tmp_path / "test_ims.npy")
    x[:7] = 0
    np.save(tmp_path / "test_ims.npy", x)
    assert PrecompSplit(tmp_path, "test").empty_image_fraction() == pytest.approx(0.7)


def test_one_vector_per_image_is_one_region(tmp_path):
    """VSE++'s precomp release: ``{split}_ims.npy`` of shape (N, D), read as (N, 1, D), also in workers."""
    write_split(tmp_path, boxes=False)
    feats = np.random.default_rng(0).random((3, 7)).astype(np.float32)
    np.save(tmp_path / "test_ims.npy", feats)
    split = PrecompSplit(tmp_path, "test")
    assert split.images.shape == (3, 1, 7) and split.num_regions == 1 and split.feature_dim == 7
    np.testing.assert_array_equal(split.read_images(np.array([2, 0]))[:, 0], feats[[2, 0]])
    again = pickle.loads(pickle.dumps(split))
    np.testing.assert_array_equal(again.read_images(np.array([1]))[:, 0], feats[[1]])
