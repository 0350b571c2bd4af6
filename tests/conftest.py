"""Shared fixtures: the smoke configuration and its prepared + scored data (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "config" / "smoke.yaml"


@pytest.fixture(scope="session")
def smoke_config() -> dict:
    from opera.config import load_config

    return load_config(SMOKE)


@pytest.fixture(scope="session")
def smoke_settings(smoke_config) -> dict:
    return smoke_config["models"]["all-MiniLM-L6-v2"]


@pytest.fixture(scope="session")
def smoke_scored(tmp_path_factory, smoke_config, smoke_settings) -> Path:
    """results-like folder with data/ and score/ for the smoke slice of SciFact."""
    import torch

    from opera import pipeline

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("smoke")
    name = next(iter(smoke_config["datasets"]))
    pipeline.download(name, smoke_config["datasets"][name], smoke_config["data"], root / "data")
    pipeline.score(root / "data", smoke_settings, smoke_config, root / "score")
    return root
