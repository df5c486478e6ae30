"""VGPU stack: a device / pinned-host / SSD pager for tensors, and ``offload`` to run models whose
weights exceed device memory. See docs/vgpu.md."""
from __future__ import annotations

from apt_ext.vgpu.offload import OffloadHandle, offload
from apt_ext.vgpu.stack import VGPUCapacityError, VGPUChecksumError, VGPUIOError, VGPUStack

__all__ = ["VGPUStack", "VGPUCapacityError", "VGPUChecksumError", "VGPUIOError", "offload", "OffloadHandle"]
