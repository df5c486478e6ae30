"""Multi-vendor device selection: ``get_device()`` and ``get_device_manager()`` (docs/contract.md §6)."""
from apt_ext.devices.manager import (
    ORDER,
    DeviceManager,
    Probe,
    get_device,
    get_device_manager,
    probe_all,
    reset_device_manager,
)

__all__ = ["ORDER", "DeviceManager", "Probe", "get_device", "get_device_manager", "probe_all",
           "reset_device_manager"]
