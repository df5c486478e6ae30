"""Accelerator detection and a uniform device manager (docs/contract.md §6).

Detection order: CUDA (ROCm reports as cuda with ``torch.version.hip``) > HPU
(``habana_frameworks.torch``) > NPU (``torch_npu``) > XPU (``torch.xpu``) > MPS > CPU.
``APT_DEVICE=<type>[:index]`` overrides it. Vendor packages are imported lazily, only
while probing, and a package that is installed but cannot initialise is reported as
unavailable with the reason; it never crashes the caller.
"""
from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

ORDER = ("cuda", "hpu", "npu", "xpu", "mps", "cpu")


@dataclass(frozen=True)
class Probe:
    """What probing one accelerator type found."""

    type: str
    available: bool
    count: int = 0
    reason: str = ""
    detail: dict = field(default_factory=dict)


def _import_vendor(name: str) -> Any:
    """Import a vendor module; ImportError means absent, any other failure is re-raised."""
    return importlib.import_module(name)


def _probe_cuda() -> Probe:
    if not torch.cuda.is_available():
        why = "torch was built without CUDA/ROCm" if torch.version.cuda is None and torch.version.hip is None else "no CUDA device visible"
        return Probe("cuda", False, reason=why)
    backend = "rocm" if torch.version.hip else "cuda"
    return Probe("cuda", True, torch.cuda.device_count(),
                 detail={"backend": backend, "name": torch.cuda.get_device_name(0),
                         "version": torch.version.hip or torch.version.cuda})


def _probe_vendor(type_: str, module: str, attr: str) -> Probe:
    """Probe a device type whose torch backend comes from an optional vendor package."""
    try:
        _import_vendor(module)
    except ImportError as exc:
        return Probe(type_, False, reason=f"{module} not installed ({exc})")
    except Exception as exc:  # installed but broken: e.g. torch_npu without the CANN runtime
        return Probe(type_, False, reason=f"{module} failed to initialise: {type(exc).__name__}: {exc}")
    try:
        backend = getattr(torch, attr)
        if not backend.is_available():
            return Probe(type_, False, reason=f"{module} imported but torch.{attr}.is_available() is False")
        return Probe(type_, True, int(backend.device_count()), detail={"module": module})
    except Exception as exc:
        return Probe(type_, False, reason=f"torch.{attr} failed: {type(exc).__name__}: {exc}")


def _probe_xpu() -> Probe:
    xpu = getattr(torch, "xpu", None)
    try:
        if xpu is not None and xpu.is_available():
            return Probe("xpu", True, int(xpu.device_count()))
    except Exception as exc:
        return Probe("xpu", False, reason=f"torch.xpu failed: {type(exc).__name__}: {exc}")
    return Probe("xpu", False, reason="torch.xpu not available in this torch build or no XPU device")


def _probe_mps() -> Probe:
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Probe("mps", True, 1)
    return Probe("mps", False, reason="not an Apple-silicon build")


PROBES: dict[str, Callable[[], Probe]] = {
    "cuda": _probe_cuda,
    "hpu": lambda: _probe_vendor("hpu", "habana_frameworks.torch", "hpu"),
    "npu": lambda: _probe_vendor("npu", "torch_npu", "npu"),
    "xpu": _probe_xpu,
    "mps": _probe_mps,
    "cpu": lambda: Probe("cpu", True, 1, detail={"threads": torch.get_num_threads()}),
}


def probe_all() -> dict[str, Probe]:
    """Probe every device type in detection order (imports vendor packages if installed)."""
    return {t: PROBES[t]() for t in ORDER}


def check_device(value: str | torch.device, name: str = "device") -> torch.device:
    """``value`` as a torch.device, checked to exist on this machine (its type available, its
    index below the device count). Raises ValueError starting with ``name`` (the argument,
    option or variable that gave the value) otherwise, e.g. for 'cuda' with a CPU-only torch."""
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name}: expected a device string such as 'cpu' or 'cuda:0', got {type(value).__name__}")
    type_ = value.type if isinstance(value, torch.device) else value.split(":", 1)[0]
    if type_ not in PROBES:
        raise ValueError(f"{name}: {str(value)!r} is not a device string such as 'cpu' or 'cuda:0' "
                         f"(device type must be one of {ORDER})")
    probe = PROBES[type_]()  # probing first: a vendor package registers its device type on import
    if not probe.available:
        raise ValueError(f"{name}={str(value)!r}: {type_} is unavailable here: {probe.reason}")
    try:
        dev = torch.device(value)
    except RuntimeError as exc:
        raise ValueError(f"{name}: {str(value)!r} is not a valid device string ({exc})") from None
    if dev.type != "cpu" and dev.index is not None and dev.index >= probe.count:
        raise ValueError(f"{name}={str(value)!r}: this machine has {probe.count} {dev.type} device(s)")
    return dev


def _parse_override(value: str) -> torch.device:
    return check_device(value, "APT_DEVICE")


def get_device() -> torch.device:
    """The best available torch.device (index 0), or ``APT_DEVICE`` when set.

    Raises ValueError when APT_DEVICE names a device type that is not available here.
    """
    override = os.environ.get("APT_DEVICE")
    if override:
        return _parse_override(override)
    for t in ORDER:
        p = PROBES[t]()
        if p.available:
            return torch.device(t, 0) if t != "cpu" else torch.device("cpu")
    return torch.device("cpu")


class DeviceManager:
    """Uniform memory/sync/seed calls for the selected accelerator.

    Uses ``torch.accelerator`` where the running torch has it and the device is the current
    accelerator, and the vendor's ``torch.<type>`` module otherwise. On the CPU, memory
    counters are 0 (torch does not track host allocations) and sync/empty_cache are no-ops.
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device if device is not None else get_device()
        self.type = self.device.type
        self._backend = getattr(torch, self.type, None) if self.type != "cpu" else None

    def __repr__(self) -> str:
        return f"DeviceManager(device={self.device}, accelerator={self.get_accelerator_type()})"

    def get_accelerator_type(self) -> str:
        """'cuda', 'rocm', 'hpu', 'npu', 'xpu', 'mps' or 'cpu'."""
        if self.type == "cuda" and torch.version.hip:
            return "rocm"
        return self.type

    def _accel(self) -> Any:
        acc = getattr(torch, "accelerator", None)
        if acc is None or self.type == "cpu":
            return None
        try:
            cur = acc.current_accelerator()
        except Exception:
            return None
        return acc if cur is not None and cur.type == self.type else None

    def device_count(self) -> int:
        return 1 if self.type == "cpu" else int(self._call("device_count"))

    def _call(self, name: str, *args: Any) -> Any:
        """torch.accelerator(.memory).<name> where it works for this device, else the vendor
        module's <name> (older torch, or an allocator that torch.accelerator cannot drive)."""
        acc = self._accel()
        if acc is not None:
            fn = getattr(acc, name, None) or getattr(getattr(acc, "memory", None), name, None)
            if fn is not None:
                try:
                    return fn(*args)
                except (RuntimeError, AttributeError, NotImplementedError):
                    pass
        fn = getattr(self._backend, name, None)
        if fn is None:
            raise RuntimeError(f"{name}: not supported for device type {self.type!r} by this torch")
        return fn(*args)

    def _mem(self, name: str) -> int:
        return 0 if self.type == "cpu" else int(self._call(name, self.device))

    def memory_allocated(self) -> int:
        """Bytes held by tensors on the device (0 on the CPU)."""
        return self._mem("memory_allocated")

    def memory_reserved(self) -> int:
        """Bytes reserved by the device's caching allocator (0 on the CPU)."""
        return self._mem("memory_reserved")

    def max_memory_allocated(self) -> int:
        """Peak bytes held by tensors since start or the last reset (0 on the CPU)."""
        return self._mem("max_memory_allocated")

    def empty_cache(self) -> None:
        if self.type != "cpu":
            self._call("empty_cache")

    def synchronize(self) -> None:
        if self.type != "cpu":
            self._call("synchronize", self.device)

    def manual_seed(self, seed: int) -> None:
        """Seed torch's CPU generator and this device's generators."""
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        torch.manual_seed(seed)
        if self.type != "cpu" and hasattr(self._backend, "manual_seed_all"):
            self._backend.manual_seed_all(seed)

    def info(self) -> dict:
        """This manager's view: device, accelerator type, count and every probe's verdict."""
        return {
            "device": str(self.device),
            "accelerator": self.get_accelerator_type(),
            "device_count": self.device_count(),
            "probes": {t: {"available": p.available, "count": p.count, "reason": p.reason, **p.detail}
                       for t, p in probe_all().items()},
        }


_manager: DeviceManager | None = None
_lock = threading.Lock()


def get_device_manager() -> DeviceManager:
    """The process-wide DeviceManager for ``get_device()`` (created on first call)."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = DeviceManager()
        return _manager


def reset_device_manager() -> None:
    """Forget the singleton (after changing APT_DEVICE, or in tests)."""
    global _manager
    with _lock:
        _manager = None
