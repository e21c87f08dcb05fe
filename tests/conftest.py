"""Fixtures for every test: the real datasets under ``../shared/data`` (beside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        reason = f"real dataset {name!r} not found at {path} (see shared/data/README.md)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def shared_data():
    """A function mapping a dataset folder name to its path; skips when absent (fails when ``CI=true``)."""
    return _shared
