"""Shared fixtures: the smoke configuration and its prepared + scored data (built once per session)."""

from __future__ import annotations

import os
import socket
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
def smoke_settings(smoke_config):
    from opera.config import model_settings

    return model_settings(smoke_config, "all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def smoke_scored(tmp_path_factory, smoke_config, smoke_settings) -> Path:
    """results-like folder with data/ and score/ for the smoke slice of SciFact."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("smoke")
    from stage_helpers import run_download, run_score

    run_download(smoke_config, root / "data")
    run_score(smoke_config, smoke_settings, root / "data", root / "score")
    return root


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to resolve a host or open a connection fails (ir_datasets would try to download)."""

    def refuse(self, *args, **kwargs):
        raise OSError("tests run offline: no network connection allowed")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: refuse(None))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The whole workflow on config/smoke.yaml, run once per test session and shared by the
    pytest-xdist workers (tests plan against it, and copy it before they change it)."""
    from workflow_helpers import built_once, snakemake

    return built_once(tmp_path_factory, "smoke_run", lambda workdir: snakemake(workdir, SMOKE, "--cores", "2"))


# Session fixtures that run a stage or a workflow (tens of seconds to minutes): a test that asks for
# one is in `make test`, not in `make test-fast`.
SLOW_FIXTURES = {"smoke_run", "smoke_scored"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the marker must be there when it looks
def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
