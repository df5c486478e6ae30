"""How many CPU threads a job should use now: the CPUs this process may run on, less the ones
other work keeps busy (the 1-minute load average). On a shared machine, more compute threads than
free CPUs make every thread wait for the others at each parallel region, so a training step can
take many times longer than with fewer threads."""
from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float:
    """The 1-minute load average (runnable processes), 0.0 where the system does not report it."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def threads_for_load(cpus: int | None = None, load: float | None = None) -> int:
    """``cpus - load`` rounded, clamped to [1, cpus]: the CPUs left free by ``load`` runnable
    processes (default: ``available_cpus()`` and ``load_average()``)."""
    cpus = available_cpus() if cpus is None else cpus
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
        raise ValueError(f"cpus: expected an int >= 1, got {cpus!r}")
    load = load_average() if load is None else load
    if not load >= 0:
        raise ValueError(f"load: expected a number >= 0, got {load!r}")
    return max(1, min(cpus, round(cpus - load)))
