"""Cached autotuning of a kernel launch over a small config list (the FP4 Triton kernels).

``triton.autotune`` fixes the grid and buffers before it picks a config; the FP4 GEMV's split
of K changes both (the float32 partials and their arrival counters), so the kernels here
tune the whole launch instead: the first call with a new key times every config with
:func:`gpu_ms` and keeps the fastest for the life of the process.

What is timed is GPU time with a cold L2: on CUDA, ``launch`` is captured in a CUDA graph after
an L2 flush, repeated, and the flushes' own time (a second graph of flushes alone) subtracted.
``triton.testing.do_bench`` times from the host instead, and a launch of a few microseconds of
GPU work whose Python side (Triton's launcher, 20+ arguments) takes longer than do_bench's
flush measures the host: on the H200 the same config measured 30.6 and 87.4 us in two passes
(benchmarks/results/fp4_triton_configs_NVIDIA_H200_round12a.json) and the tuner's picks changed between
runs. Eager callers still pay the launcher's host time; CUDA graphs and torch.compile's
"reduce-overhead" mode do not.
Tuning runs kernels and synchronises, so make the first call of each shape before capturing a
CUDA graph. With one config (always under ``TRITON_INTERPRET=1``), or with
``APT_TRITON_AUTOTUNE=0`` in the environment (the first config of each list: no tuning time,
e.g. for tests), nothing is timed.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Hashable, TypeVar

import torch

C = TypeVar("C")

_BEST: dict[Hashable, object] = {}


def best_config(key: Hashable, make_configs: Callable[[], list[C]], launch: Callable[[C], object],
                device: torch.device) -> C:
    """The fastest of ``make_configs()`` for ``key`` (cached: the list is only made on a miss);
    ``launch(config)`` runs the kernel(s) once on ``device``.

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
    best, best_ms, error = None, math.inf, None
    for config in configs:
        try:
            ms = gpu_ms(lambda: launch(config), device)
        except Exception as exc:  # out of resources or not compilable here: try the next config
            error = exc
            continue
        if ms < best_ms:
            best, best_ms = config, ms
    if best is None:
        raise RuntimeError(f"every one of {len(configs)} configs failed for {key}") from error
    _BEST[key] = best
    return best


_FLUSH_BYTES = 256 << 20  # more than any current GPU's L2 (H200: 50 MiB)
_GRAPH_CALLS = 20


def gpu_ms(fn: Callable[[], object], device: torch.device, repeats: int = 5, cold_l2: bool = True) -> float:
    """Median GPU milliseconds of ``fn()`` on ``device`` with a cold L2 and without its host time
    (NVIDIA CUDA): ``fn`` runs once (compiles), then a CUDA graph of _GRAPH_CALLS x (L2 flush,
    fn) and one of the flushes alone are each replayed ``repeats`` times; the difference per
    call is returned. With ``cold_l2=False`` the graph holds the calls back to back, no flushes:
    what fits in L2 (a small weight) stays there from call to call. Elsewhere (ROCm, XPU), or when
    the launch cannot be captured, it falls back to ``triton.testing.do_bench``'s median, which
    times from the host (L2 flushed)."""
    from triton.testing import do_bench

    if not isinstance(cold_l2, bool):
        raise TypeError(f"gpu_ms: cold_l2 must be a bool, got {type(cold_l2).__name__}")
    fn()
    if device.type != "cuda" or torch.version.hip is not None:
        return float(do_bench(fn, warmup=5, rep=20, return_mode="median"))
    flush = torch.empty(_FLUSH_BYTES // 4, dtype=torch.int32, device=device) if cold_l2 else None
    graphs = []
    try:
        for with_fn in ((True, False) if cold_l2 else (True,)):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(_GRAPH_CALLS):
                    if cold_l2:
                        flush.zero_()
                    if with_fn:
                        fn()
            graphs.append(graph)
    except RuntimeError:  # not capturable (e.g. a host sync inside): time it from the host
        torch.cuda.synchronize(device)
        return float(do_bench(fn, warmup=5, rep=20, return_mode="median"))
    medians = []
    for graph in graphs:
        graph.replay()  # warm
        ms = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            ms.append(start.elapsed_time(end))
        medians.append(sorted(ms)[len(ms) // 2])
    return max(0.0, (medians[0] - (medians[1] if cold_l2 else 0.0)) / _GRAPH_CALLS)


def clear() -> None:
    """Forget every pick: the next call of each key tunes again (benchmarks that compare picks)."""
    _BEST.clear()


def tuned() -> dict[Hashable, object]:
    """A copy of the cache: key -> chosen config (for benchmarks and reports)."""
    return dict(_BEST)
