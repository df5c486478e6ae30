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
def postgres_databases():
    """Fresh databases on the configured PostgreSQL server, dropped at the end of the session
    (skips, or fails under CI, when no server is configured: see tests/memory_helpers.py)."""
    from memory_helpers import PostgresDatabases, postgres_admin_url

    databases = PostgresDatabases(postgres_admin_url())
    yield databases
    databases.drop_all()


@pytest.fixture(params=["sqlite", "postgres"])
def store_path(request, tmp_path):
    """Where a test's AIM-Memory lives: a new SQLite file or a new PostgreSQL database (URL,
    dropped after the test, which also closes the connections the test left open)."""
    if request.param == "sqlite":
        yield str(tmp_path / "memory.db")
        return
    databases = request.getfixturevalue("postgres_databases")
    url = databases.new()
    yield url
    databases.drop(url)
