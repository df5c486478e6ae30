"""``apt_ext.capabilities()``: which backend of which op is compiled and usable here."""
from __future__ import annotations

import importlib.util
import os

import torch

from apt_ext import _native

OPS = (
    "fp4_pack", "fp4_unpack", "fp4_quantize", "fp4_dequantize", "fp4_linear", "fp4_linear_gelu",
    "left_spin_residual", "left_spin_residual_backward",
)


def triton_status() -> tuple[bool, str]:
    """(usable, reason): Triton kernels run on a Triton GPU, or anywhere under TRITON_INTERPRET=1."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton not installed"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, "TRITON_INTERPRET=1 (CPU interpreter, for tests)"
    if torch.cuda.is_available():
        return True, "GPU present"
    return False, "installed, but no GPU (set TRITON_INTERPRET=1 to interpret on the CPU)"


def capabilities() -> dict:
    """Per op and backend: ``{"compiled": bool, "usable": bool}``, plus build and device facts.

    ``compiled`` means a kernel is registered for that backend; ``usable`` means it can run on
    this machine now (CUDA needs a visible GPU; Triton needs triton and a GPU or the
    interpreter; CPU is always usable when compiled).
    """
    from apt_ext.devices import get_device_manager

    cuda_dev = torch.cuda.is_available()
    triton_ok, triton_why = triton_status()
    triton_ops: set[str] = set()
    if _native._C is not None:
        from apt_ext import ops
        triton_ops = set(ops.TRITON_OPS)
    ops_info = {}
    for op in OPS:
        cpu = _native.has_kernel(op, "CPU")
        cuda = bool(_native.build_info().get("cuda")) and _native.has_kernel(op, "CUDA")
        tri = op in triton_ops
        ops_info[op] = {
            "cpu": {"compiled": cpu, "usable": cpu},
            "cuda": {"compiled": cuda, "usable": cuda and cuda_dev},
            "triton": {"compiled": tri, "usable": tri and triton_ok},
        }
    try:
        dm = get_device_manager().info()
    except Exception as exc:  # the report must never crash
        dm = {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_hip": torch.version.hip,
        "native_loaded": _native._C is not None,
        "native_error": _native.LOAD_ERROR,
        "build": _native.build_info(),
        "triton": {"usable": triton_ok, "reason": triton_why},
        "force_triton": os.environ.get("APT_FORCE_TRITON") == "1",
        "ops": ops_info,
        "devices": dm,
    }
