"""Shared pieces of the AIM-Memory tests: a deterministic test embedder and the store fixture's
PostgreSQL databases.

PostgreSQL tests use the server at ``APT_TEST_POSTGRES_URL`` (``.ci/run`` starts one with
``tools/start_test_postgres.sh`` and sets it). Without that variable they skip, except under CI
(``CI`` set), where a missing server is a failure.
"""
from __future__ import annotations

import os
import re
import uuid
import zlib
from urllib.parse import urlsplit

import numpy as np
import pytest

DIM = 64
POSTGRES_URL_ENV = "APT_TEST_POSTGRES_URL"


class TokenHashEmbedder:
    """Deterministic test embedder: sum of per-token pseudo-random vectors (seeded by crc32)."""

    name = "token-hash-test"

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()) or [text]:
                out[row] += np.random.default_rng(zlib.crc32(token.encode())).standard_normal(self.dim)
        return out


def postgres_admin_url() -> str:
    """The configured server's URL; skips (fails under CI) when none is configured."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        message = f"no PostgreSQL server configured ({POSTGRES_URL_ENV} unset; .ci/run starts one)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if os.environ.get("CI"):
        import psycopg  # noqa: F401  (under CI a missing driver is a failure)
    else:
        pytest.importorskip("psycopg")
    return url


class PostgresDatabases:
    """Creates fresh databases on the configured server and drops them afterwards."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def new(self) -> str:
        import psycopg

        name = f"aim_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return urlsplit(self.admin_url)._replace(path="/" + name).geturl()

    def drop(self, url: str) -> None:
        """Drop the database of ``url`` (closing its open connections)."""
        import psycopg

        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            self.drop(urlsplit(self.admin_url)._replace(path="/" + name).geturl())
