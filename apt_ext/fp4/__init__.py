"""FP4 weights ("Virtual Blackwell"): nvfp4, mxfp4 and nf4 (SPEC section 3).

``quantize(w, fmt)`` -> ``FP4Weight``; ``quantize_(model, fmt)`` swaps nn.Linear for
``apt_ext.nn.FP4Linear`` in place.
"""
from apt_ext.fp4.checks import FORMATS
from apt_ext.fp4.weight import FP4Weight, quantize

__all__ = ["FORMATS", "FP4Weight", "quantize", "quantize_"]


def __getattr__(name: str):
    # quantize_ lives with the module it installs (apt_ext.nn); imported lazily to keep
    # apt_ext.fp4 importable from apt_ext.ops without a cycle.
    if name == "quantize_":
        from apt_ext.nn.fp4_linear import quantize_
        return quantize_
    raise AttributeError(name)
