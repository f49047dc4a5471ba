import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine is shared: tests run on one thread, with small shapes."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private artifact cache for one test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ANALYSIS_CACHE", str(path))
    return path
