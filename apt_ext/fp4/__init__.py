"""FP4 weights ("Virtual Blackwell"): nvfp4, mxfp4 and nf4 (docs/contract.md §3), all in this package.

    format.py   the formats: names, block sizes, scale dtypes, code tables, error texts
    weight.py   FP4Weight and quantize(w, fmt)
    _ops.py     wrappers of torch.ops.apt.fp4_*, their fake kernels and autograd
Kernels: csrc/fp4/ (C++ CPU and CUDA, argument checks, the C++ format table) and
apt_ext/triton/fp4_*.py; the layer is apt_ext.nn.FP4Linear.

``quantize(w, fmt)`` -> ``FP4Weight``; ``quantize_(model, fmt)`` swaps nn.Linear for
``apt_ext.nn.FP4Linear`` in place.
"""
from apt_ext.fp4.format import DEFAULT_FORMAT, FORMAT_NAMES, FORMATS, FP4Format, get_format
from apt_ext.fp4.weight import FP4Weight, quantize

__all__ = ["DEFAULT_FORMAT", "FORMAT_NAMES", "FORMATS", "FP4Format", "FP4Weight", "get_format", "quantize",
           "quantize_"]


def __getattr__(name: str):
    # quantize_ lives with the module it installs (apt_ext.nn), which imports this package.
    if name == "quantize_":
        from apt_ext.nn.fp4_linear import quantize_
        return quantize_
    raise AttributeError(f"module 'apt_ext.fp4' has no attribute {name!r}")
