"""Shared helpers of the VGPU tests: random tensors of mixed dtypes, byte-level comparison, and
a corrupted SSD page."""
from __future__ import annotations

import os
import threading
from typing import Callable

import torch

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int8, torch.uint8,
          torch.int32, torch.int64, torch.bool)


def random_tensor(g: torch.Generator, numel_max: int = 4096) -> torch.Tensor:
    """A random tensor (never all zeros unless empty) of a random dtype and 0-3 dims."""
    dtype = DTYPES[int(torch.randint(len(DTYPES), (1,), generator=g))]
    ndim = int(torch.randint(0, 4, (1,), generator=g))
    numel = int(torch.randint(0, numel_max + 1, (1,), generator=g))
    if ndim == 0:
        shape: tuple[int, ...] = ()
    elif ndim == 1:
        shape = (numel,)
    else:
        lead = int(torch.randint(1, 9, (1,), generator=g))
        shape = (lead,) + (1,) * (ndim - 2) + (max(numel // lead, 1),)
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 3).to(dtype)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    lo, hi = (-100, 100) if dtype in (torch.int8,) else (0, 250) if dtype == torch.uint8 else (-(1 << 30), 1 << 30)
    return torch.randint(lo, hi, shape, generator=g, dtype=dtype)


def random_tensors_over(g: torch.Generator, nbytes: int, numel_max: int = 4096) -> dict[str, torch.Tensor]:
    """Random tensors ``{'t0': ..., 't1': ...}`` drawn until together they hold more than
    ``nbytes`` bytes, so a test that needs data to spill past a level always spills."""
    data: dict[str, torch.Tensor] = {}
    total = 0
    while total <= nbytes:
        t = random_tensor(g, numel_max)
        data[f"t{len(data)}"] = t
        total += t.nbytes
    return data


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when dtype, shape and every byte agree."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    return bytes(a.reshape(-1).view(torch.uint8).numpy()) == bytes(b.reshape(-1).view(torch.uint8).numpy())


def cpu_levels(tmp_path, device_mb: float = 0.25, host_mb: float = 0.5, ssd_mb: float = 64) -> list[dict]:
    """Three levels that work on any machine: a CPU 'device' level, the host slab, SSD files."""
    return [
        {"device": "cpu", "kind": "device", "capacity_mb": device_mb},
        {"device": "cpu", "capacity_mb": host_mb},
        {"device": "ssd", "capacity_mb": ssd_mb, "path": str(tmp_path / "ssd")},
    ]


def run_threads(worker: Callable[[int], None], n: int = 8) -> None:
    """Run worker(0..n-1) on n threads at once and wait for all of them."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def corrupt_only_ssd_page(stack, offset: int = 5000) -> None:
    """Flip one bit at ``offset`` of the stack's only SSD page file (asserts there is one)."""
    ssd_dir = stack.stats()["ssd_dir"]
    files = [os.path.join(ssd_dir, f) for f in os.listdir(ssd_dir)]
    assert len(files) == 1, files
    with open(files[0], "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))
