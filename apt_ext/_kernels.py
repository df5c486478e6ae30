"""Kernels of the ``apt::`` ops that are registered from Python, recorded for ``capabilities()``.

The native kernels register themselves from C++ (``TORCH_LIBRARY_IMPL`` next to their sources).
A kernel written in Python (a composite of other ops, or a Triton kernel, see
``apt_ext.triton``) registers through :func:`register_kernel`, so ``capabilities()`` can tell it
from a compiled one.
"""
from __future__ import annotations

from typing import Callable

import torch

# (op, device type) -> what the Python kernel registered there is; device type "cpu" or "cuda".
PYTHON_KERNELS: dict[tuple[str, str], str] = {}


def register_kernel(op: str, device_type: str, what: str, fn: Callable) -> None:
    """Make ``fn`` the ``device_type`` ("cpu", "cuda") kernel of ``apt::<op>`` and record it
    with the description ``what``."""
    torch.library.register_kernel(f"apt::{op}", device_type, fn)
    PYTHON_KERNELS[(op, device_type)] = what


def concrete_shapes(*tensors: torch.Tensor | None) -> bool:
    """True when no tensor has a symbolic (dynamic) size: the native argument checks read plain
    sizes, so a fake kernel runs them only then (the real kernel checks again at run time)."""
    return not any(isinstance(s, torch.SymInt) for t in tensors if t is not None for s in t.shape)
