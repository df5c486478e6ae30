"""``apt_ext.capabilities()``: which backend of which op is compiled and usable here."""
from __future__ import annotations

import importlib.util
import os

import torch

from apt_ext import _native

OPS = (
    "fp4_pack", "fp4_unpack", "fp4_quantize", "fp4_dequantize", "fp4_linear", "fp4_linear_gelu",
    "left_spin_residual", "left_spin_residual_backward", "decode_attention", "decode_attention_kvcache",
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


def cpu_isa() -> dict:
    """The SIMD paths of the CPU kernels (csrc/cpu_isa.h) and the one each capability uses now:
    ``{"paths": [{name, requires, compiled, supported}], "fp4": {path, requires, env}, "left_spin": ...}``
    (``requires``: the CPU flags that path needs; a capability whose ``env`` variable names an
    unusable path shows ``error`` instead). Empty when the extension is not loaded."""
    if _native._C is None:
        return {}
    return {"paths": [dict(p) for p in _native._C.cpu_isa.paths()],
            **{cap: dict(v) for cap, v in _native._C.cpu_isa.in_use().items()}}


def _backend(native: bool, python_kernel: str | None, usable_here: bool) -> dict:
    kernel = "native" if native else python_kernel
    return {"compiled": native, "kernel": kernel, "usable": kernel is not None and usable_here}


def capabilities() -> dict:
    """Per op and backend: ``{"compiled", "kernel", "usable"}``, plus build and device facts.

    ``cpu_isa`` names the SIMD path the FP4 and left-spin CPU kernels use and the CPU flags it
    requires (see :func:`cpu_isa`).

    ``compiled``: a native (C++/CUDA) kernel is registered for that backend. ``kernel``: what
    runs there: "native", a description of a Python kernel (a Triton kernel, or a Python
    composite of other ops such as fp4_linear_gelu on the CPU), or None. ``usable``: it can run
    on this machine now (CUDA needs a visible GPU; Triton needs triton and a GPU or the
    interpreter).
    """
    from apt_ext import triton as apt_triton
    from apt_ext._kernels import PYTHON_KERNELS
    from apt_ext.devices import get_device_manager

    cuda_dev = torch.cuda.is_available()
    triton_ok, triton_why = triton_status()
    ops_info = {}
    for op in OPS:
        cpu_py = PYTHON_KERNELS.get((op, "cpu"))
        cuda_py = PYTHON_KERNELS.get((op, "cuda"))
        # a Python kernel registered for CUDA replaced any native one
        cuda = bool(_native.build_info().get("cuda")) and _native.has_kernel(op, "CUDA") and cuda_py is None
        if cuda_py is not None and op in apt_triton.KERNELS and cuda_py.startswith("Triton"):
            cuda_py = None  # a Triton kernel serving CUDA tensors is reported in the triton column
        cpu = _native.has_kernel(op, "CPU") and cpu_py is None
        tri = op in apt_triton.KERNELS
        ops_info[op] = {
            "cpu": _backend(cpu, cpu_py, True),
            "cuda": _backend(cuda, cuda_py, cuda_dev),
            "triton": _backend(False, f"Triton: {apt_triton.KERNELS[op].__module__}" if tri else None, triton_ok),
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
        "cpu_isa": cpu_isa(),
        "triton": {"usable": triton_ok, "reason": triton_why},
        "force_triton": os.environ.get("APT_FORCE_TRITON") == "1",
        "ops": ops_info,
        "devices": dm,
    }
