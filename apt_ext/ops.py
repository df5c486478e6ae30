"""Compatibility re-export of the op wrappers, which live with their capability:
``apt_ext.fp4._ops`` (fp4_pack ... fp4_linear_gelu) and ``apt_ext.left_spin._ops``
(left_spin_residual). New code imports from there (or from ``apt_ext.left_spin``)."""
from apt_ext.fp4._ops import fp4_dequantize, fp4_linear, fp4_linear_gelu, fp4_pack, fp4_quantize, fp4_unpack
from apt_ext.left_spin._ops import left_spin_residual

__all__ = ["fp4_pack", "fp4_unpack", "fp4_quantize", "fp4_dequantize", "fp4_linear", "fp4_linear_gelu",
           "left_spin_residual"]
