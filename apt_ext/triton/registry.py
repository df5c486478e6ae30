"""Which ``apt::`` ops have a Triton implementation: ``kernels()`` -> {op name: callable}.

apt_ext.ops registers each as the op's CUDA kernel where the CUDA build has none, or when
APT_FORCE_TRITON=1.
"""
from __future__ import annotations

from typing import Callable


def kernels() -> dict[str, Callable]:
    found: dict[str, Callable] = {}
    from apt_ext.triton import fp4_dequantize, fp4_linear, left_spin

    found.update(fp4_dequantize=fp4_dequantize.fp4_dequantize, fp4_linear=fp4_linear.fp4_linear,
                 fp4_linear_gelu=fp4_linear.fp4_linear_gelu)
    found["left_spin_residual"] = left_spin.left_spin_residual
    found["left_spin_residual_backward"] = left_spin.left_spin_residual_backward
    return found
