"""Left-spin smoothed residuals (docs/contract.md §4).

``left_spin_residual(u, du, du_prev, phi_prev, ...)`` is the fused op (kernels in
csrc/left_spin/, Triton in apt_ext/triton/left_spin.py); ``LeftSpinParams`` holds its
hyperparameters and defaults; the ``nn`` layers are ``apt_ext.nn.LeftSpinResidual`` and
``apt_ext.nn.LeftSpinChain``.
"""
from apt_ext.left_spin.params import DEFAULTS, LeftSpinParams

__all__ = ["DEFAULTS", "LeftSpinParams", "left_spin_residual"]


def __getattr__(name: str):
    # The op wrapper needs the native extension; importing it lazily keeps the parameter record
    # usable (config, CLI) in a build without it.
    if name == "left_spin_residual":
        from apt_ext.left_spin._ops import left_spin_residual
        return left_spin_residual
    raise AttributeError(f"module 'apt_ext.left_spin' has no attribute {name!r}")
