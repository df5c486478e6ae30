"""``apt_model.optimization``: the design document's FP4, VGPU, vb, device and cloud-NPU names
(re-exports of apt_ext; see :mod:`apt_model`). Imported on first use, so that e.g.
``FusedFP4Linear`` does not need Ray or the VGPU pager."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "FusedFP4Linear": ("apt_ext.nn", "FusedFP4Linear"),
    "FP4Linear": ("apt_ext.nn", "FP4Linear"),
    "quantize_": ("apt_ext.nn", "quantize_"),
    "VGPUStack": ("apt_ext.vgpu", "VGPUStack"),
    "offload": ("apt_ext.vgpu", "offload"),
    "vb": ("apt_ext.vb", None),            # the module itself
    "vb_global": ("apt_ext.vb", None),
    "get_device_manager": ("apt_ext.devices", "get_device_manager"),
    "get_device": ("apt_ext.devices", "get_device"),
    "CloudNPULinear": ("apt_model.optimization.cloud", "CloudNPULinear"),
    "CloudNPUBackend": ("apt_model.optimization.cloud", "CloudNPUBackend"),
    "enable_cloud_npu": ("apt_model.optimization.cloud", "enable_cloud_npu"),
    "disable_cloud_npu": ("apt_model.optimization.cloud", "disable_cloud_npu"),
    "get_cloud_npu_manager": ("apt_model.optimization.cloud", "get_cloud_npu_manager"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        mod = importlib.import_module(module)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'apt_model.optimization' has no attribute {name!r}")
