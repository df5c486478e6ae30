"""Drop-in modules built on the apt ops."""
from apt_ext.nn.fp4_linear import FP4Linear, FusedFP4Linear, quantize_
from apt_ext.nn.left_spin import LeftSpinChain, LeftSpinResidual

__all__ = ["FP4Linear", "FusedFP4Linear", "quantize_", "LeftSpinChain", "LeftSpinResidual"]
