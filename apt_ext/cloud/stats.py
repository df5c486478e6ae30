"""Thread-safe call statistics shared by the chat client and remote modules: named counters
plus a latency window with p50/p95."""
from __future__ import annotations

import threading
from collections import deque

import numpy as np


class CallStats:
    """Counters (ints) and the latencies (seconds) of the last ``window`` calls."""

    def __init__(self, counters: tuple[str, ...], window: int = 10000) -> None:
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(counters, 0)
        self._latencies: deque[float] = deque(maxlen=window)
        self.last_error: str | None = None

    def __getstate__(self) -> dict:   # copies and pickles carry the numbers, not the lock
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def count(self, name: str, n: int = 1) -> None:
        if name not in self._counters:
            raise KeyError(f"name: unknown counter {name!r}; known: {sorted(self._counters)}")
        with self._lock:
            self._counters[name] += int(n)

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(float(seconds))

    def error(self, exc: BaseException | str) -> None:
        with self._lock:
            self.last_error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"

    def snapshot(self) -> dict:
        """Counters, ``latency_p50_s`` / ``latency_p95_s`` (None before the first call) and
        ``last_error``."""
        with self._lock:
            out: dict = dict(self._counters)
            lat = np.asarray(self._latencies, dtype=np.float64)
            out["latency_p50_s"] = float(np.percentile(lat, 50)) if lat.size else None
            out["latency_p95_s"] = float(np.percentile(lat, 95)) if lat.size else None
            out["last_error"] = self.last_error
        return out
