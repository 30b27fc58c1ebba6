"""Shared test fixtures. Real data from ``../shared/data`` (or ``$KGITM_SHARED_DATA``) is read in
place and tests that need it skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("KGITM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """Path of the shared real data; skips the test when it is not on this machine."""
    root = shared_data_dir()
    if not (root / "README.md").exists():
        pytest.skip(f"shared real data not found at {root} (set KGITM_SHARED_DATA to its folder)")
    return root


@pytest.fixture(scope="session")
def tiny_synthscenes(tmp_path_factory) -> Path:
    """A tiny SynthScenes folder (generated once per test session, well under a second)."""
    from kgitm.data.synthscenes import generate

    root = tmp_path_factory.mktemp("synth") / "tiny"
    generate(root, preset="tiny", seed=0)
    return root


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Tests keep kgitm's cache (concept graphs, finiteness scans) in a folder of their own, not ~/.cache."""
    old = os.environ.get("KGITM_CACHE_DIR")
    os.environ["KGITM_CACHE_DIR"] = str(tmp_path_factory.mktemp("kgitm_cache"))
    yield
    if old is None:
        os.environ.pop("KGITM_CACHE_DIR", None)
    else:
        os.environ["KGITM_CACHE_DIR"] = old
