"""tests/core setup: keep the garbage collector off the session's long-lived objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _frozen_heap() -> Iterator[None]:
    """Every Trainer.train() calls gc.collect() (accelerate's free_memory); over the heap of a test session
    (torch, transformers, TRL, fixtures) that took ~40% of a 4-step stage run. Objects alive before the test
    are frozen (skipped by collections) and unfrozen after it, so nothing is kept alive for longer."""
    gc.freeze()
    yield
    gc.unfreeze()
