"""The SIMD paths of the CPU kernels this machine runs, from the one detector (csrc/cpu_isa.h):
the values tests give APT_FP4_CPU_ISA and APT_LEFT_SPIN_CPU_ISA to cover every path."""
from __future__ import annotations

from apt_ext import _native


def supported_cpu_paths() -> list[str]:
    """Names of the paths compiled into this build whose CPU flags this machine has, slowest first."""
    _native.require("the CPU path list")
    return [p["name"] for p in _native._C.cpu_isa.paths() if p["supported"]]
