"""Multi-vendor device selection: ``get_device()``, ``check_device()`` and ``get_device_manager()``
(docs/contract.md §6); CPU threads for the current load: ``threads_for_load()``."""
from apt_ext.devices.cpu import available_cpus, load_average, threads_for_load
from apt_ext.devices.manager import (
    ORDER,
    DeviceManager,
    Probe,
    check_device,
    get_device,
    get_device_manager,
    probe_all,
    reset_device_manager,
)

__all__ = ["ORDER", "DeviceManager", "Probe", "available_cpus", "check_device", "get_device", "get_device_manager",
           "load_average", "probe_all", "reset_device_manager", "threads_for_load"]
