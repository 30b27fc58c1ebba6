"""Distributed evaluation equals one-process evaluation.

Two levels: :func:`kgitm.eval.distributed.gather_similarity` with W ranks simulated by threads (the
shares a ``DistributedSampler`` makes, repeats and ``limit_*_batches`` included) against the plain
one-process matrix; and a real 2-process DDP run (gloo on the CPU) through the CLI in
``test_ddp_cli.py``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.eval.distributed import EvalShare, OneProcess, gather_similarity
from kgitm.eval.metrics import evaluate_retrieval
from kgitm.eval.similarity import compute_similarity
from kgitm.matchers.scan import SCANMatcher

K = 5


class ThreadWorld:
    """W threads standing in for W processes: ``all_gather_object`` waits for every rank."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self._slots: list = [None] * world_size
        self._barrier = threading.Barrier(world_size)
        self.calls = 0

    def member(self, rank: int):
        world = self

        class Member:
            def __init__(self) -> None:
                self.rank, self.world_size = rank, world.world_size

            def all_gather_object(self, obj):
                world._slots[rank] = obj
                world._barrier.wait()
                out = list(world._slots)
                world._barrier.wait()  # nobody overwrites a slot before all have read
                if rank == 0:
                    world.calls += 1
                return out

        return Member()


def _split(n_images: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    regions, words, d = 6, 9, 16
    img_mask = torch.arange(regions)[None] < torch.randint(2, regions + 1, (n_images, 1), generator=g)
    images = EncodedImages(torch.randn(n_images, regions, d, generator=g), img_mask, torch.rand(n_images, regions, 4, generator=g))
    lengths = torch.randint(2, words + 1, (n_images * K, 1), generator=g)
    captions = EncodedCaptions(torch.randn(n_images * K, words, d, generator=g), torch.arange(words)[None] < lengths)
    return images, captions


def _share(images, captions, indices: list[int]) -> EvalShare:
    """What a rank's split encoder holds after seeing captions ``indices`` (in that order)."""
    if not indices:
        e = torch.zeros(0, dtype=torch.long)
        return EvalShare(e, None, e, e, None)
    idx = torch.tensor(indices)
    owners = sorted(set((idx // K).tolist()))
    return EvalShare(torch.tensor(owners), images.index(torch.tensor(owners)), idx, idx // K, captions.index(idx))


def _run(world_size: int, shares: list[EvalShare], score):
    world = ThreadWorld(world_size)
    out: list = [None] * world_size
    errors: list = []

    def work(rank: int) -> None:
        try:
            out[rank] = gather_similarity(shares[rank], score, captions_per_image=K, collective=world.member(rank))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
            world._barrier.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out, world


@pytest.fixture(scope="module")
def scan():
    return SCANMatcher(direction="t2i")


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("n_images", [7, 8])
def test_shares_of_a_distributed_sampler_give_the_one_process_matrix(world_size, n_images, scan):
    images, captions = _split(n_images)
    score = lambda i, c: compute_similarity(scan, i, c, memory_budget_mb=0.05)  # noqa: E731 - small blocks
    reference = compute_similarity(scan, images, captions).numpy()
    m = n_images * K
    shares = [_share(images, captions, list(DistributedSampler(range(m), num_replicas=world_size, rank=r, shuffle=False)))
              for r in range(world_size)]
    out, world = _run(world_size, shares, score)
    assert world.calls == 3  # indices, images, columns: each gathered once
    ref_metrics = evaluate_retrieval(reference, captions_per_image=K)
    for rank, g in enumerate(out):
        assert not g.incomplete
        np.testing.assert_allclose(g.sims, reference, rtol=0, atol=1e-6, err_msg=f"rank {rank}")
        assert torch.equal(g.images.features, images.features)
        metrics = evaluate_retrieval(g.sims, captions_per_image=K)
        assert {k: metrics[k] for k in ("rsum", "i2t_r1", "t2i_r1")} == {k: ref_metrics[k] for k in ("rsum", "i2t_r1", "t2i_r1")}


def test_a_perfect_matrix_scores_600_on_every_rank():
    """The bug this replaces: rank 0 of 2 kept its own share and reported RSUM 11.7."""
    n = 10
    images, captions = _split(n)

    def perfect(i: EncodedImages, c: EncodedCaptions) -> torch.Tensor:
        # each item's first feature is its image's index (set below): 1 for the true pairs, else 0
        return (i.features[:, 0, 0][:, None] == c.features[:, 0, 0][None, :]).float()

    images.features[:, 0, 0] = torch.arange(n, dtype=torch.float32)
    captions.features[:, 0, 0] = torch.arange(n * K, dtype=torch.float32) // K
    shares = [_share(images, captions, list(DistributedSampler(range(n * K), num_replicas=2, rank=r, shuffle=False))) for r in range(2)]
    out, _ = _run(2, shares, perfect)
    for g in out:
        assert evaluate_retrieval(g.sims, captions_per_image=K)["rsum"] == pytest.approx(600.0)


def test_a_stopped_loop_keeps_the_complete_prefix_on_every_rank(scan):
    """``limit_val_batches``: each rank sees its first batches only; the images whose K captions were
    all seen (across ranks) are evaluated, the same on every rank and as in one process."""
    n, world_size, batch, batches = 9, 2, 4, 3
    images, captions = _split(n, seed=1)
    shares = []
    for r in range(world_size):
        order = list(DistributedSampler(range(n * K), num_replicas=world_size, rank=r, shuffle=False))
        shares.append(_share(images, captions, order[: batch * batches]))
    seen = world_size * batch * batches  # the union is captions 0 .. seen-1
    keep = seen // K
    score = lambda i, c: compute_similarity(scan, i, c)  # noqa: E731
    out, _ = _run(world_size, shares, score)
    reference = compute_similarity(scan, images.index(slice(0, keep)), captions.index(slice(0, keep * K))).numpy()
    for g in out:
        assert g.incomplete and g.sims.shape == (keep, keep * K)
        np.testing.assert_allclose(g.sims, reference, rtol=0, atol=1e-6)
    # one process, the same stop: the same prefix
    one = gather_similarity(_share(images, captions, list(range(seen))), score, captions_per_image=K, collective=OneProcess())
    np.testing.assert_allclose(one.sims, reference, rtol=0, atol=1e-6)


def test_a_rank_without_batches_still_gets_the_matrix(scan):
    n = 2
    images, captions = _split(n, seed=2)
    shares = [_share(images, captions, list(range(n * K))), _share(images, captions, [])]
    out, _ = _run(2, shares, lambda i, c: compute_similarity(scan, i, c))
    np.testing.assert_allclose(out[1].sims, compute_similarity(scan, images, captions).numpy(), atol=1e-6)


def test_one_process_passes_its_encodings_through_untouched(scan):
    images, captions = _split(3)
    seen = []

    def score(i, c):
        seen.append((i, c))
        return compute_similarity(scan, i, c)

    idx = torch.arange(15)
    g = gather_similarity(EvalShare(torch.arange(3), images, idx, idx // K, captions), score, captions_per_image=K, collective=OneProcess())
    assert not g.incomplete and g.sims.shape == (3, 15)
    assert seen[0][0] is images and seen[0][1] is captions and g.images is images  # no copy, no reordering


def test_a_caption_listed_under_the_wrong_image_is_refused(scan):
    images, captions = _split(2)
    idx = torch.arange(10)
    share = EvalShare(torch.arange(2), images, idx, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), captions)
    with pytest.raises(RuntimeError, match="caption 4 belongs to image 1, not 0"):
        gather_similarity(share, lambda i, c: compute_similarity(scan, i, c), captions_per_image=K, collective=OneProcess())


@pytest.mark.parametrize(("accelerator", "devices", "cuda", "message"), [
    ("gpu", 1, 0, "this machine has no CUDA GPU"),
    ("cuda", "4", 2, "--trainer.devices 4: this machine has 2 CUDA GPU"),
    ("gpu", [0, 1, 2], 2, "this machine has 2 CUDA GPU"),
    ("cpu", 64, 0, "starts 64 processes but this machine has 2 cores"),
])
def test_a_device_request_the_machine_cannot_meet_is_one_line(accelerator, devices, cuda, message):
    from kgitm.cli.lightning import ConfigError, check_devices

    with pytest.raises(ConfigError, match=message):
        check_devices(accelerator, devices, cuda_devices=cuda, cpu_cores=2)


@pytest.mark.parametrize(("accelerator", "devices"), [("auto", "auto"), ("cpu", 2), ("gpu", -1), ("gpu", "auto"), ("cpu", 1)])
def test_requests_the_machine_meets_pass(accelerator, devices):
    from kgitm.cli.lightning import check_devices

    check_devices(accelerator, devices, cuda_devices=2, cpu_cores=2)
