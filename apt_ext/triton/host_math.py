"""Integer helpers for the host side of the Triton kernels (grids, K splits, row buckets).

``triton.cdiv`` and ``triton.next_power_of_2`` are Triton constexpr functions in newer releases
(3.9 here): called from Python they unwrap every argument first, which costs microseconds per
call, and one eager FP4 launch computes several. These are the plain integer forms.
"""
from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for integers a >= 0, b > 0."""
    if b <= 0:
        raise ValueError(f"b: expected a positive int, got {b}")
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 that is >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
