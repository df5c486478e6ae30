"""apt_ext: the APT-Transformer feature set as real, measured PyTorch ops.

Native ops live under ``torch.ops.apt`` (see ``apt_ext.ops``); capabilities live in one
package each: ``apt_ext.fp4``, ``apt_ext.nn``, ``apt_ext.devices``, ...
"""
from __future__ import annotations

from apt_ext import _native
from apt_ext.capabilities import capabilities

__version__ = "0.1.0"

if _native._C is not None:
    from apt_ext import ops  # noqa: F401  (fake kernels, autograd, Triton fallbacks)
    from apt_ext.fp4 import FP4Weight  # noqa: F401
    from apt_ext.fp4 import tiled  # noqa: F401  (fake kernels of the tiled layout's ops)
    from apt_ext.nn.fp4_linear import quantize_  # noqa: F401

__all__ = ["capabilities", "quantize_", "FP4Weight", "__version__"]
