"""The FP4 formats of docs/contract.md §3: the one Python home of their names, block sizes, scale
dtypes and code tables, and of the error texts Python code raises about them.

The C++ kernels keep the same facts in ``csrc/fp4/fp4_format.h``; ``tests/test_fp4_format.py``
checks the two against each other through ``apt_ext._C.fp4.format_table()``.

    fmt     block  scale per block (dtype)                      tensor scale     bits/weight
    nvfp4   16     float8_e4m3fn  s = block_amax / 6 / ts        amax/(448*6)     4.5
    mxfp4   32     uint8          e + 127, e = ceil(log2(amax/6)) 1.0              4.25
    nf4     64     float32        block absmax                  1.0              4.5
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

# E2M1 values by code: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 for codes 0..7, the negatives for 8..15.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
               -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
# The 16 NF4 values (QLoRA), ascending; code 7 is 0.
NF4_VALUES = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
              -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
              0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
              0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0)
E4M3_MAX = 448.0   # largest finite float8_e4m3fn (nvfp4's block scales saturate there)
E2M1_MAX = 6.0     # largest E2M1 magnitude


@dataclass(frozen=True)
class FP4Format:
    """One format: its name, the one block size it allows, the dtype its per-block scales are
    stored in, the 16 values its codes decode to (before scaling) and the code of 0."""

    name: str
    block_size: int
    scale_dtype: torch.dtype
    values: tuple[float, ...]
    zero_code: int
    bits_per_weight: float


FORMATS: dict[str, FP4Format] = {
    "nvfp4": FP4Format("nvfp4", 16, torch.float8_e4m3fn, E2M1_VALUES, 0, 4.5),
    "mxfp4": FP4Format("mxfp4", 32, torch.uint8, E2M1_VALUES, 0, 4.25),
    "nf4": FP4Format("nf4", 64, torch.float32, NF4_VALUES, 7, 4.5),
}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)  # in the order of csrc/fp4/fp4_format.h's enum
DEFAULT_FORMAT = "nvfp4"


def unknown_format_message(fmt: object) -> str:
    """The error text for a format name that is not one of FORMAT_NAMES (the C++ text is the same)."""
    names = ", ".join(f"'{n}'" for n in FORMAT_NAMES)
    return f"fmt: unknown FP4 format {fmt!r}; expected one of {names}"


def get_format(fmt: str) -> FP4Format:
    """The FP4Format called ``fmt``; ValueError naming ``fmt`` otherwise."""
    spec = FORMATS.get(fmt) if isinstance(fmt, str) else None
    if spec is None:
        raise ValueError(unknown_format_message(fmt))
    return spec


def block_size_for(fmt: str, block_size: int | None = None) -> int:
    """``block_size``, or the format's own block size when it is None (TypeError naming it when it
    is neither an int nor None). The ops check the pair."""
    if block_size is None:
        return get_format(fmt).block_size
    if isinstance(block_size, bool) or not hasattr(type(block_size), "__index__"):  # int() took '16' and 16.5
        raise TypeError(f"block_size: expected an int or None, got {block_size!r}")
    return operator.index(block_size)


def code_table(fmt: str, device: torch.device | str | None = None) -> torch.Tensor:
    """float32 [16]: the value each 4-bit code of ``fmt`` decodes to (before scaling)."""
    return torch.tensor(get_format(fmt).values, dtype=torch.float32, device=device)
