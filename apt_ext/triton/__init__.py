"""Triton kernels of the ``apt::`` ops: the GPU fallback when the CUDA build is absent (and the
ROCm/XPU path). Tested on the CPU with TRITON_INTERPRET=1 on tiny shapes.

Each kernel module declares its kernels with :func:`kernel`, which records them in ``KERNELS``
and registers each as the CUDA implementation of its op where the native build has none (or
everywhere under ``APT_FORCE_TRITON=1``), as bitsandbytes' backends do. ``apt_ext`` calls
:func:`load` once the native extension is loaded; nothing here imports triton before that.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from typing import Callable

from apt_ext import _native
from apt_ext._kernels import register_kernel

# op name -> Triton implementation (whether or not it is the op's registered CUDA kernel)
KERNELS: dict[str, Callable] = {}
_MODULES = ("decode_attention", "fp4_dequantize", "fp4_linear", "left_spin")


def kernel(op: str) -> Callable[[Callable], Callable]:
    """Decorator of a Triton implementation of ``apt::<op>`` (same schema as the op; its first
    argument a tensor). The implementation runs with that tensor's GPU as the current device
    (launch.on_device), as a native op's device guard would."""

    def declare(fn: Callable) -> Callable:
        from apt_ext.triton.launch import on_device  # imports triton: kernel modules already have

        @functools.wraps(fn)
        def on_its_device(first, *args, **kwargs):
            with on_device(first):
                return fn(first, *args, **kwargs)

        KERNELS[op] = on_its_device
        if os.environ.get("APT_FORCE_TRITON") == "1" or not _native.has_kernel(op, "CUDA"):
            register_kernel(op, "cuda", f"Triton: {fn.__module__}.{fn.__name__}", on_its_device)
        return on_its_device

    return declare


def load() -> None:
    """Import the kernel modules (which register themselves) when triton is installed."""
    if importlib.util.find_spec("triton") is None:
        return
    for name in _MODULES:
        importlib.import_module(f"apt_ext.triton.{name}")
