"""``VGPUStack``: tensors stored under string keys in a hierarchy of levels (device memory,
one pinned host slab, SSD files), moved by the C++ pager in ``csrc/vgpu/``.

Argument checks: this module checks what it owns (the config dicts and their conversion to
the pager's level specs, key and tensor types, the ``device`` argument of ``get``); the pager
(csrc/vgpu/pager.cpp) checks the rest (sizes, level order, device strings, queue depth, I/O
backend, tensor layout and device) and raises ValueError/TypeError naming the argument."""
from __future__ import annotations

import math
import numbers
import os
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from apt_ext import _native
from apt_ext.devices import check_device

_native.require("apt_ext.vgpu")
from apt_ext._C import VGPUCapacityError, VGPUChecksumError, VGPUIOError, VGPULevelSpec, VGPUPager  # noqa: E402

_LEVEL_FIELDS = {"capacity_mb", "device", "speed_gbps", "path", "kind"}
_CONFIG_KEYS = {"levels", "io_backend", "queue_depth", "io_chunk_mb", "allow_missing_devices"}
# the link that reads a level's data up into the level above it (its measured speed is
# reported next to the level's nominal speed_gbps); the device level has none
_READ_LINK = {"device": None, "host": "host->device", "ssd": "ssd->host"}
_WRITE_LINK = {"device": None, "host": "device->host", "ssd": "host->ssd"}
_MB = 1 << 20


def default_ssd_parent() -> Path:
    """Where an SSD level without ``path`` keeps its files: ``$XDG_CACHE_HOME/apt_ext/vgpu``
    (default ``~/.cache/apt_ext/vgpu``), created with mode 0700. The pager makes a private
    ``apt_vgpu_XXXXXX`` directory inside it (mkdtemp) and deletes it on ``close()``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    d = Path(base) / "apt_ext" / "vgpu"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def _missing_device(device: str) -> str | None:
    """Why the device level ``device`` cannot exist on this machine, or None when it can."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        return None  # not a device string at all: the pager's check names the argument
    if dev.type != "cuda":
        return None
    try:
        check_device(dev)
    except ValueError as exc:
        return str(exc).split(": ", 1)[-1]  # the reason, without the leading "device=...: "
    return None


def _drop_missing_levels(levels: Sequence[Any], allow_missing_devices: bool) -> tuple[list, list[dict]]:
    """((index, level) pairs of the levels that exist here, skipped levels). A device level naming an absent device raises a
    ValueError that says which levels would work, or is skipped with a warning when
    ``allow_missing_devices``."""
    keep, skipped = [], []
    for i, lv in enumerate(levels):
        device = lv.get("device") if isinstance(lv, Mapping) else None
        why = _missing_device(device) if isinstance(device, (str, torch.device)) and str(device) not in ("cpu", "ssd") \
            else None
        if why is None:
            keep.append((i, lv))
        else:
            skipped.append({"level": i, "device": str(device), "reason": why})
    if not skipped:
        return keep, []
    names = ", ".join(f"levels[{i}] ({lv.get('device') if isinstance(lv, Mapping) else repr(lv)})" for i, lv in keep)
    for sk in skipped:
        if not allow_missing_devices:
            raise ValueError(f"levels[{sk['level']}].device: {sk['device']!r} is not present: {sk['reason']}. "
                             f"Levels that would work here: {names or 'none'}. Remove the level, or pass "
                             f"allow_missing_devices=True to skip it with a warning.")
    if not keep:
        raise ValueError(f"levels: no level is usable on this machine ({skipped})")
    warnings.warn("VGPUStack: skipping " + "; ".join(f"levels[{sk['level']}] ({sk['device']!r}: {sk['reason']})"
                                                       for sk in skipped)
                  + f"; the stack uses {names}", RuntimeWarning, stacklevel=3)
    return keep, skipped


def _level_spec(i: int, level: Any) -> tuple[VGPULevelSpec, str, str]:
    """(native spec, kind, device) of ``levels[i]``, validated."""
    if not isinstance(level, Mapping):
        raise TypeError(f"levels[{i}]: expected a dict with 'capacity_mb' and 'device', got {type(level).__name__}")
    unknown = set(level) - _LEVEL_FIELDS
    if unknown:
        raise ValueError(f"levels[{i}]: unknown field(s) {sorted(unknown)}; expected some of {sorted(_LEVEL_FIELDS)}")
    cap = level.get("capacity_mb")
    if isinstance(cap, bool) or not isinstance(cap, numbers.Real):
        raise TypeError(f"levels[{i}].capacity_mb: expected a positive number of MiB, got {cap!r}")
    if not math.isfinite(cap):  # the pager checks the size in bytes; this is the conversion's
        raise ValueError(f"levels[{i}].capacity_mb: expected a positive number of MiB, got {cap!r}")
    device = level.get("device")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"levels[{i}].device: expected 'cuda[:i]', 'cpu' or 'ssd', got {device!r}")
    device = str(device)
    kind = level.get("kind")
    if kind is None:
        kind = "ssd" if device == "ssd" else "host" if device == "cpu" else "device"
    if kind == "ssd" and device != "ssd":
        raise ValueError(f"levels[{i}]: kind 'ssd' needs device 'ssd', got {device!r}")
    if kind == "host" and device != "cpu":
        raise ValueError(f"levels[{i}]: kind 'host' needs device 'cpu', got {device!r}")
    path = level.get("path", "")
    if kind == "ssd":
        if path is None or path == "":
            path = str(default_ssd_parent())
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"levels[{i}].path: expected a directory path (str) or no path, got {path!r}")
        path = os.fspath(path)
    elif path:
        raise ValueError(f"levels[{i}].path: only the ssd level takes a path")
    speed = level.get("speed_gbps", 0.0)
    if isinstance(speed, bool) or not isinstance(speed, numbers.Real) or speed < 0:
        raise ValueError(f"levels[{i}].speed_gbps: expected a non-negative number, got {speed!r}")
    spec = VGPULevelSpec(kind, device if kind == "device" else "", int(cap * _MB), str(path), float(speed))
    return spec, kind, device


def _speed_row(i: int, level: dict, links: dict) -> dict:
    def measured(name: str | None) -> float | None:
        link = links.get(name) if name else None
        return link["gbps"] if link and link["bytes"] else None
    read, write = _READ_LINK[level["kind"]], _WRITE_LINK[level["kind"]]
    if level["kind"] == "host" and i == 0:   # a host level with no device level above it
        read = write = None
    return {"level": i, "kind": level["kind"], "device": level["device"],
            "nominal_gbps": level["nominal_speed_gbps"] or None,
            "read_link": read, "measured_read_gbps": measured(read),
            "write_link": write, "measured_write_gbps": measured(write)}


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key: expected a str, got {type(key).__name__}")
    if not key:
        raise ValueError("key: expected a non-empty str")
    return key


class VGPUStack:
    """A pager of tensors over levels ordered fastest first: ``device`` (a CUDA device, or the
    CPU for testing), ``host`` (one slab allocated up front; pinned when CUDA is available) and
    ``ssd`` (files under ``path``; O_DIRECT where allowed; io_uring or a pread thread pool).

    ``levels``: list of dicts ``{'capacity_mb': float > 0, 'device': 'cuda[:i]'|'cpu'|'ssd',
    'path': dir (ssd only; default: a private directory under ``default_ssd_parent()``, the
    user's cache), 'speed_gbps': nominal (reported in ``stats()['speeds']`` next to the measured
    link speed, never used), 'kind': optional}``. The kind is
    inferred from ``device`` ('cuda*' -> device, 'cpu' -> host, 'ssd' -> ssd); pass
    ``'kind': 'device'`` with ``'device': 'cpu'`` for a CPU "device" level (no GPU).
    ``io_backend``: 'auto' (io_uring if it works here, else pread; env ``APT_VGPU_IO`` overrides),
    'io_uring' or 'pread'. ``queue_depth``: io_uring ring size / I/O requests in flight.
    ``io_chunk_mb``: MiB per I/O request when a page moves to or from the SSD level (a multiple
    of 4 KiB, at most 1024; default 4, faster than 1 on the disks measured: docs/vgpu.md).
    ``allow_missing_devices``: a device level naming a device this machine lacks ('cuda:0'
    without a GPU) raises a ValueError listing the levels that would work (default), or, when
    True, is skipped with a RuntimeWarning (``stats()['skipped_levels']`` lists it).

    Guarantees: eviction is LRU per level and demotes to the next level (data is never dropped);
    a full stack raises ``VGPUCapacityError`` and keeps everything stored; SSD pages are verified
    against a checksum (``VGPUChecksumError``); disk errors raise ``VGPUIOError`` (an OSError with
    ``errno``) and leave the data in the level above. The SSD level is a cache for this process:
    its files are deleted by ``close()``. All methods are thread-safe.
    """

    def __init__(self, levels: Sequence[Mapping[str, Any]], io_backend: str = "auto", queue_depth: int = 64,
                 allow_missing_devices: bool = False, io_chunk_mb: float = 4) -> None:
        if isinstance(levels, (str, bytes, Mapping)) or not isinstance(levels, Sequence):
            raise TypeError(f"levels: expected a list of level dicts, got {type(levels).__name__}")
        if not isinstance(io_backend, str):
            raise TypeError(f"io_backend: expected 'auto', 'io_uring' or 'pread', got {io_backend!r}")
        if isinstance(queue_depth, bool) or not isinstance(queue_depth, int):
            raise TypeError(f"queue_depth: expected an int in [1, 4096], got {queue_depth!r}")
        if not isinstance(allow_missing_devices, bool):
            raise TypeError(f"allow_missing_devices: expected a bool, got {allow_missing_devices!r}")
        if isinstance(io_chunk_mb, bool) or not isinstance(io_chunk_mb, (int, float)):
            raise TypeError(f"io_chunk_mb: expected a number of MiB, got {io_chunk_mb!r}")
        io_chunk = io_chunk_mb * (1 << 20)
        if not (4096 <= io_chunk <= 1 << 30) or io_chunk != int(io_chunk) or int(io_chunk) % 4096:
            raise ValueError(f"io_chunk_mb: expected a multiple of 4 KiB from 4 KiB to 1024 MiB, got {io_chunk_mb!r}")
        kept, self._skipped = _drop_missing_levels(levels, allow_missing_devices)
        parsed = [_level_spec(i, lv) for i, lv in kept]
        self._pager = VGPUPager([p[0] for p in parsed], io_backend, queue_depth, int(io_chunk))
        # close() at garbage collection or interpreter exit: SSD files never outlive the process
        weakref.finalize(self, self._pager.close)
        _, kind0, device0 = parsed[0]
        #: where ``get(key)`` returns tensors: the device level's device, else the CPU
        self.device = torch.device(device0) if kind0 == "device" else torch.device("cpu")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], allow_missing_devices: bool | None = None) -> "VGPUStack":
        """Build from ``{'levels': [...], 'io_backend'?: str, 'queue_depth'?: int, 'io_chunk_mb'?: number,
        'allow_missing_devices'?: bool}`` (the keyword argument overrides the config key)."""
        if not isinstance(config, Mapping):
            raise TypeError(f"config: expected a dict with 'levels', got {type(config).__name__}")
        unknown = set(config) - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"config: unknown key(s) {sorted(unknown)}; expected some of {sorted(_CONFIG_KEYS)}")
        if "levels" not in config:
            raise ValueError("config: missing 'levels' (a list of {'capacity_mb', 'device', ...} dicts)")
        if allow_missing_devices is None:
            allow_missing_devices = config.get("allow_missing_devices", False)
        return cls(config["levels"], io_backend=config.get("io_backend", "auto"),
                   queue_depth=config.get("queue_depth", 64), allow_missing_devices=allow_missing_devices,
                   io_chunk_mb=config.get("io_chunk_mb", 4))

    # -- data ---------------------------------------------------------------------------
    def put(self, key: str, tensor: torch.Tensor) -> None:
        """Store ``tensor`` (any shape/dtype, CPU or CUDA; copied, made contiguous) under ``key``
        in the fastest level with room, replacing any previous value only once stored."""
        _check_key(key)
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor: expected a torch.Tensor, got {type(tensor).__name__}")
        if tensor.is_quantized:
            raise TypeError("tensor: quantized tensors are not supported; store int_repr() and the scales")
        self._pager.put(key, tensor)

    def get(self, key: str, device: str | torch.device | None = None) -> torch.Tensor:
        """The tensor of ``key``. ``device=None`` (or the device level's device) promotes it to
        the fastest level and returns the resident tensor itself, with no copy: treat it as
        read-only (``put`` again to change it). Any other device gets a fresh copy; a CUDA device
        this machine does not have raises ValueError naming ``device``."""
        _check_key(key)
        if device is not None:
            if not isinstance(device, (str, torch.device)):
                raise TypeError(f"device: expected None, a str or a torch.device, got {type(device).__name__}")
            try:
                device = torch.device(device)
            except RuntimeError as exc:
                raise ValueError(f"device: {exc}") from None
            if device.type not in ("cpu", "cuda"):
                raise ValueError(f"device: expected a CPU or CUDA device, got {device}")
            if device.type == "cuda":  # e.g. 'cuda:0' with a CPU-only torch, or an index past the count
                check_device(device, "device")
        return self._pager.get(key, device)

    def prefetch(self, keys: str | Iterable[str]) -> None:
        """Start promoting ``keys`` to the fastest level in the background; returns at once.
        Raises KeyError (queuing nothing) if a key is missing. Errors during the background move
        are counted in ``stats()['prefetch_errors']`` and raised again by the ``get`` that needs it."""
        if isinstance(keys, str):
            keys = [keys]
        elif isinstance(keys, Iterable):
            keys = list(keys)
        else:
            raise TypeError(f"keys: expected a str or an iterable of str, got {type(keys).__name__}")
        for k in keys:
            _check_key(k)
        self._pager.prefetch(keys)

    def wait_prefetch(self) -> None:
        """Block until every queued prefetch has finished."""
        self._pager.wait_prefetch()

    def pin(self, key: str) -> None:
        """Never evict ``key`` from the fastest level that holds it (counted: pin twice, unpin twice)."""
        self._pager.pin(_check_key(key))

    def unpin(self, key: str) -> None:
        """Undo one ``pin``; ValueError if ``key`` is not pinned."""
        self._pager.unpin(_check_key(key))

    def evict(self, key: str) -> bool:
        """Move ``key`` one level down (never drops it); False if it is already in the last level."""
        return self._pager.evict(_check_key(key))

    def remove(self, key: str) -> None:
        """Delete ``key`` from every level (KeyError if missing)."""
        self._pager.remove(_check_key(key))

    def level(self, key: str) -> int:
        """Index of the fastest level holding ``key``."""
        return self._pager.level_of(_check_key(key))

    def keys(self) -> list[str]:
        return list(self._pager.keys())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._pager.contains(key)

    def __len__(self) -> int:
        return len(self._pager.keys())

    def stats(self) -> dict:
        """Measured counters: per level ``hits``/``misses``/``evictions``/``used_bytes``; per link
        (``'host->device'``, ``'device->host'``, ``'ssd->host'``, ``'host->ssd'``) ``bytes``,
        ``seconds`` (time spent copying; CUDA events on GPU), ``gbps``; the I/O backend in use,
        whether O_DIRECT is active, the checksum, and ``hit_rate`` (level-0 hits / gets).
        ``speeds``: per level, the nominal ``speed_gbps`` of the config next to the measured GB/s
        of the link that reads that level's data up (``ssd->host``, ``host->device``) and of the
        link that writes into it (None where no bytes crossed it; the device level has no link).
        ``skipped_levels``: levels dropped under ``allow_missing_devices``."""
        s = self._pager.stats()
        s["hit_rate"] = s["levels"][0]["hits"] / s["gets"] if s["gets"] else 0.0
        s["speeds"] = [_speed_row(i, lv, s["links"]) for i, lv in enumerate(s["levels"])]
        s["skipped_levels"] = list(self._skipped)
        return s

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Release the device tensors and the host slab and delete the SSD files (idempotent)."""
        self._pager.close()

    @property
    def closed(self) -> bool:
        return self._pager.closed()

    def __enter__(self) -> "VGPUStack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "VGPUStack(closed)"
        lv = ", ".join(f"{x['kind']}:{x['device']} {x['used_bytes'] / _MB:.1f}/{x['capacity_bytes'] / _MB:.1f} MiB"
                       for x in self._pager.stats()["levels"])
        return f"VGPUStack({lv})"
