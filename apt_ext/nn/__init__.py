"""Drop-in modules built on the apt ops."""
from apt_ext.nn.dequant_ahead import DequantAhead, dequant_ahead
from apt_ext.nn.fp4_linear import FP4Linear, FusedFP4Linear, quantize_, swiglu
from apt_ext.nn.left_spin import LeftSpinChain, LeftSpinResidual
from apt_ext.nn.norm_fusion import fold_rms_norm_, linear_residual, rms_norm_linear, rms_norm_swiglu

__all__ = ["DequantAhead", "dequant_ahead", "FP4Linear", "FusedFP4Linear", "quantize_", "swiglu", "LeftSpinChain",
           "LeftSpinResidual", "fold_rms_norm_", "linear_residual", "rms_norm_linear", "rms_norm_swiglu"]
