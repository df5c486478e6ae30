"""apt_ext: the APT-Transformer feature set as real, measured PyTorch ops.

Native ops live under ``torch.ops.apt`` (schemas in csrc/ops.cpp); each capability has one
package: ``apt_ext.fp4`` (formats, weights, op wrappers), ``apt_ext.left_spin``, ``apt_ext.nn``,
``apt_ext.vgpu``, ``apt_ext.devices``, ``apt_ext.model``, ``apt_ext.memory``, ...
Importing apt_ext registers the Python side of the ops (fake kernels, autograd, Triton kernels)
when the native extension loaded; if it did not, ``capabilities()`` says why and the first use
of a native op raises that load error.
"""
from __future__ import annotations

from apt_ext import _native
from apt_ext.capabilities import capabilities
from apt_ext.fp4 import FP4Weight
from apt_ext.fp4 import _ops as _fp4_ops
from apt_ext.left_spin import _ops as _left_spin_ops
from apt_ext.nn.fp4_linear import quantize_

__version__ = "0.1.0"

if _native._C is not None:
    from apt_ext import triton as _triton

    _fp4_ops.register()
    _left_spin_ops.register()
    _triton.load()

__all__ = ["capabilities", "quantize_", "FP4Weight", "__version__"]
