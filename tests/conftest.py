"""Shared pytest setup: GPU tests (tests/gpu/, marker ``gpu``) are skipped without CUDA."""
from __future__ import annotations

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


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session (Ray takes seconds to start); the
    cluster's resources."""
    ray = pytest.importorskip("ray")
    from apt_ext.cloud.remote import connect
    resources = connect(num_cpus=2, object_store_memory=256 * 2**20)
    yield resources
    ray.shutdown()
