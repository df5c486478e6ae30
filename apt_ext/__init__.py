"""apt_ext: the APT-Transformer feature set as real, measured PyTorch ops.

Native ops live under ``torch.ops.apt`` (schemas in csrc/ops.cpp; ``decode_attention``, which has
no native kernel, in apt_ext/attention/_ops.py); each capability has one package:
``apt_ext.fp4`` (formats, weights, op wrappers), ``apt_ext.left_spin``, ``apt_ext.attention``,
``apt_ext.nn``, ``apt_ext.vgpu``, ``apt_ext.devices``, ``apt_ext.model``, ``apt_ext.memory``, ...
Importing apt_ext loads the native extension and registers the Python side of its ops (fake
kernels, autograd, Triton kernels); if the extension did not load, ``capabilities()`` says why
and the first use of a native op raises that load error.

One exception: in the ``apt-ext`` console script, ``import apt_ext`` does not import torch
(so that ``apt-ext --help``, ``--version`` and ``apt-ext memory`` start in a fraction of a
second); the commands that need the ops call :func:`load` first, and touching
``apt_ext.capabilities``, ``apt_ext.quantize_`` or ``apt_ext.FP4Weight`` loads them too.
"""
from __future__ import annotations

import os
import sys

__version__ = "0.1.0"
__all__ = ["capabilities", "quantize_", "FP4Weight", "load", "__version__"]

_LOADED = False


def load() -> None:
    """Load the native extension and register the Python side of its ops; idempotent."""
    global _LOADED, capabilities, quantize_, FP4Weight
    if _LOADED:
        return
    from apt_ext import _native
    from apt_ext.capabilities import capabilities
    from apt_ext.fp4 import FP4Weight
    from apt_ext.fp4 import _ops as fp4_ops
    from apt_ext.left_spin import _ops as left_spin_ops
    from apt_ext.nn.fp4_linear import quantize_

    if _native._C is not None:
        from apt_ext import triton
        from apt_ext.attention import _ops as attention_ops  # noqa: F401  (defines apt::decode_attention)

        fp4_ops.register()
        left_spin_ops.register()
        triton.load()
    _LOADED = True


def _in_console_script() -> bool:
    """True when this process is the ``apt-ext`` console script (its commands call load())."""
    argv = getattr(sys, "argv", None) or [""]
    return os.path.basename(argv[0]) in ("apt-ext", "apt-ext.exe") and "torch" not in sys.modules


def __getattr__(name: str):
    if name in ("capabilities", "quantize_", "FP4Weight"):
        load()
        return globals()[name]
    raise AttributeError(f"module 'apt_ext' has no attribute {name!r}")


if not _in_console_script():
    load()
