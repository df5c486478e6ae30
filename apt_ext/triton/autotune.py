"""Cached autotuning of a kernel launch over a small config list (the FP4 Triton kernels).

``triton.autotune`` fixes the grid and buffers before it picks a config; the FP4 GEMV's split
of K changes both (the float32 partials and whether a reduction runs), so the kernels here
tune the whole launch instead: the first call with a new key times every config with
``triton.testing.do_bench`` (median ms) and keeps the fastest for the life of the process.
Tuning runs kernels and synchronises, so make the first call of each shape before capturing a
CUDA graph. With one config (always under ``TRITON_INTERPRET=1``), or with
``APT_TRITON_AUTOTUNE=0`` in the environment (the first config of each list: no tuning time,
e.g. for tests), nothing is timed.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Hashable, TypeVar

C = TypeVar("C")

_BEST: dict[Hashable, object] = {}


def best_config(key: Hashable, make_configs: Callable[[], list[C]], launch: Callable[[C], object]) -> C:
    """The fastest of ``make_configs()`` for ``key`` (cached: the list is only made on a miss);
    ``launch(config)`` runs the kernel(s) once.

    A config that fails to compile or launch (e.g. too much shared memory on this GPU) is
    skipped; if every config fails, the last error is raised.
    """
    if key in _BEST:
        return _BEST[key]  # type: ignore[return-value]
    configs = make_configs()
    if not configs:
        raise ValueError("make_configs: returned no config")
    if len(configs) == 1 or os.environ.get("APT_TRITON_AUTOTUNE") == "0":
        _BEST[key] = configs[0]
        return configs[0]
    from triton.testing import do_bench

    best, best_ms, error = None, math.inf, None
    for config in configs:
        try:
            ms = float(do_bench(lambda: launch(config), warmup=5, rep=20, return_mode="median"))
        except Exception as exc:  # out of resources or not compilable here: try the next config
            error = exc
            continue
        if ms < best_ms:
            best, best_ms = config, ms
    if best is None:
        raise RuntimeError(f"every one of {len(configs)} configs failed for {key}") from error
    _BEST[key] = best
    return best


def clear() -> None:
    """Forget every pick: the next call of each key tunes again (benchmarks that compare picks)."""
    _BEST.clear()


def tuned() -> dict[Hashable, object]:
    """A copy of the cache: key -> chosen config (for benchmarks and reports)."""
    return dict(_BEST)
