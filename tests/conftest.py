"""Shared pytest setup.

- tests/gpu/ carries the ``gpu`` marker; CI and the README run ``-m "not gpu"`` (those tests are
  reported as deselected). Run without CUDA anyway, they skip with the reason.
- Every test starts from a fresh random seed for torch, numpy and ``random`` (and the ``rng``
  generator). A failing test's report shows the seed; ``APT_TEST_SEED=<seed> python -m pytest
  <test id>`` replays its inputs.
"""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

SEED_ENV = "APT_TEST_SEED"


@pytest.hookimpl(tryfirst=True)  # before -m "not gpu" selects on the marker
def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run tests/gpu through the device machine)")
    for item in items:
        if "/tests/gpu/" in str(item.path):
            item.add_marker(pytest.mark.gpu)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def apt_seed(request) -> int:
    """The test's random seed ($APT_TEST_SEED, else fresh); torch, numpy and random are seeded."""
    value = int(os.environ[SEED_ENV]) if os.environ.get(SEED_ENV) else random.SystemRandom().randrange(2**31)
    request.node.apt_seed = value
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)
    return value


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    value = getattr(item, "apt_seed", None)
    if report.failed and value is not None:
        report.sections.append(("random seed", f"{SEED_ENV}={value} python -m pytest '{item.nodeid}' "
                                               "replays this test's random inputs"))


@pytest.fixture
def rng(apt_seed: int) -> torch.Generator:
    """A generator seeded from the test's seed (a different stream than the global one)."""
    g = torch.Generator()
    g.manual_seed(apt_seed ^ 0x5EED)
    return g


@pytest.fixture
def left_spin_op_dtypes(monkeypatch) -> list:
    """The (u, du, du_prev) dtypes of every call that left-spin residual sites
    (apt_ext.nn.LeftSpinResidual, the model's sites) make to the op, in order."""
    import apt_ext.nn.left_spin as nls
    seen = []
    real = nls.left_spin_residual

    def spy(u, du, du_prev, phi_prev, **kw):
        seen.append((u.dtype, du.dtype, None if du_prev is None else du_prev.dtype))
        return real(u, du, du_prev, phi_prev, **kw)
    monkeypatch.setattr(nls, "left_spin_residual", spy)
    return seen


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
