"""Shared fixtures: the native extension (built once per machine, cached) and paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def native() -> None:
    """Skips when the native extension cannot be built here (the reason is printed)."""
    from splatfield.render import _ext

    if not _ext.native_available():
        pytest.skip(f"native rasterizer unavailable: {_ext.native_error()}")


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Tests run with the machine's threads, like users; pin torch's intra-op pool size so
    # results do not depend on what an earlier test set.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
