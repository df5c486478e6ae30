"""Loads the compiled extension ``apt_ext._C`` once; the rest of the package asks here.

Importing ``_C`` runs the static ``TORCH_LIBRARY`` registrations, which define the
``torch.ops.apt.*`` ops and their C++ CPU/CUDA kernels.
"""
from __future__ import annotations

import torch

try:
    from apt_ext import _C  # noqa: F401  (registers torch.ops.apt.*)

    LOAD_ERROR: str | None = None
except ImportError as exc:  # a source checkout that was never built, or a torch ABI mismatch
    _C = None
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"


def require() -> None:
    """Raise a clear ImportError when the native extension is missing."""
    if _C is None:
        raise ImportError(
            "apt_ext._C (the native kernels) could not be loaded: "
            f"{LOAD_ERROR}. Build it with `pip install --no-build-isolation -e .` "
            "against the torch you run."
        )


def build_info() -> dict:
    """What the extension was compiled with (CUDA, SIMD, libraries); empty if not built."""
    return dict(_C.build_info()) if _C is not None else {}


def has_kernel(op: str, dispatch_key: str) -> bool:
    """True when ``apt::<op>`` has a kernel registered for ``dispatch_key`` (CPU, CUDA, ...)."""
    if _C is None:
        return False
    return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"apt::{op}", dispatch_key))
