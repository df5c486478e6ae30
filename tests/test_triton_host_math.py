"""apt_ext.triton.host_math against Triton's own cdiv and next_power_of_2 (the forms it replaces
on the host)."""
from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

from apt_ext.triton.host_math import cdiv, next_power_of_2  # noqa: E402


@pytest.mark.parametrize("b", [1, 2, 3, 7, 16, 64, 1000])
def test_cdiv_matches_triton(b):
    for a in list(range(0, 300)) + [4095, 4096, 4097, 1 << 40]:
        assert cdiv(a, b) == triton.cdiv(a, b) == -(-a // b), (a, b)


def test_next_power_of_2_matches_triton():
    for n in list(range(1, 2100)) + [(1 << 31) - 1, 1 << 31, (1 << 31) + 1]:
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
        assert next_power_of_2(n) >= n and next_power_of_2(n) & (next_power_of_2(n) - 1) == 0, n


def test_cdiv_rejects_a_non_positive_divisor():
    with pytest.raises(ValueError, match="b: expected a positive int"):
        cdiv(4, 0)
