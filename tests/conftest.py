"""Shared pytest setup: GPU tests (tests/gpu/, marker ``gpu``) are skipped without CUDA."""
from __future__ import annotations

import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run tests/gpu through the device machine)")
    for item in items:
        if "/tests/gpu/" in str(item.path):
            item.add_marker(pytest.mark.gpu)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture
def rng() -> torch.Generator:
    """A fresh, differently seeded generator per test (inputs are never zeros)."""
    g = torch.Generator()
    g.seed()
    return g


@pytest.fixture
def one_thread():
    """Run a test with one intra-op thread (tiny models run fastest that way on the shared
    2-core CI machine); restores the previous count afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def seed() -> int:
    """A fresh random seed per test, printed (pytest shows it with a failure); set
    APT_TEST_SEED to replay one."""
    s = int(os.environ.get("APT_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"seed={s} (replay: APT_TEST_SEED={s})")
    return s
