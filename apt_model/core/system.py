"""``from apt_model.core.system import get_device`` (the design document's path):
:func:`apt_ext.devices.get_device` (CUDA/ROCm > HPU > NPU > XPU > MPS > CPU, ``APT_DEVICE`` overrides)."""
from apt_ext.devices import get_device, get_device_manager

__all__ = ["get_device", "get_device_manager"]
