"""Shared fixtures: a tiny model and the demo data, built once per test session, fully offline."""

from __future__ import annotations

import os
from pathlib import Path

# Offline before anything imports transformers: an accidental hub call must fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def alignd_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private ALIGND_HOME for the whole session, so tests never touch ~/.alignd."""
    home = tmp_path_factory.mktemp("alignd-home")
    os.environ["ALIGND_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from alignment_core.modeling.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from alignment_core.demo.task import write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("demo-data"), seed=0)
