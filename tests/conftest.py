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
