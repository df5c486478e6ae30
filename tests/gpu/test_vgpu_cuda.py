"""VGPUStack with a CUDA device level (run through the device machine):
pytest -q tests/gpu/test_vgpu_cuda.py"""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from apt_ext import _native
from apt_ext.vgpu import VGPUChecksumError, VGPUStack, offload
from vgpu_helpers import corrupt_only_ssd_page, random_tensor, random_tensors_over, run_threads, same_bytes


def _levels(tmp_path, device_mb: float, host_mb: float, ssd_mb: float = 256) -> list[dict]:
    return [{"device": "cuda:0", "capacity_mb": device_mb}, {"device": "cpu", "capacity_mb": host_mb},
            {"device": "ssd", "capacity_mb": ssd_mb, "path": str(tmp_path / "ssd")}]


def test_cuda_round_trip_and_pinned_slab(tmp_path, rng):
    st = VGPUStack(_levels(tmp_path, 0.5, 1.0))
    s = st.stats()
    assert s["host_pinned"] and s["levels"][0]["device"].startswith("cuda")
    ref = {}
    py = random.Random(0)
    for step in range(1500):
        if ref and py.random() < 0.5:
            k = py.choice(list(ref))
            got = st.get(k)
            assert got.is_cuda and same_bytes(got, ref[k]), f"step {step}: {k}"
        else:
            k = f"k{py.randrange(300)}"
            t = random_tensor(rng, 4096)
            ref[k] = t
            st.put(k, t.cuda() if py.random() < 0.5 else t)
    assert all(same_bytes(st.get(k, device="cpu"), v) for k, v in ref.items())
    links = st.stats()["links"]
    assert links["host->device"]["gbps"] > 0 and links["device->host"]["bytes"] > 0
    st.close()


def test_cuda_eight_threads(tmp_path):
    st = VGPUStack(_levels(tmp_path, 0.25, 0.5))
    errors: list[str] = []

    def worker(tid: int) -> None:
        g = torch.Generator().manual_seed(tid)
        mine = {}
        try:
            for i in range(200):
                k = f"w{tid}_{i % 25}"
                if i % 3 == 2 and k in mine:
                    if not same_bytes(st.get(k), mine[k]):
                        errors.append(f"{tid}: {k}")
                else:
                    mine[k] = random_tensor(g, 2048)
                    st.put(k, mine[k])
            torch.cuda.synchronize()
        except Exception as exc:
            errors.append(f"{tid}: {type(exc).__name__}: {exc}")

    run_threads(worker, 8)
    assert not errors, errors[:5]
    st.close()


def test_cuda_offload_matches_resident(tmp_path):
    torch.manual_seed(0)
    d = 512
    model = nn.Sequential(*[nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)) for _ in range(8)])
    model = model.to(torch.bfloat16).cuda().eval()
    x = torch.randn(16, d, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        ref = model(x)
    wb = sum(p.nbytes for p in model.parameters()) / (1 << 20)
    st = VGPUStack(_levels(tmp_path, 0.25 * wb, 2 * wb))
    handle = offload(model, st, prefetch=2)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(model(x), ref)
    torch.cuda.synchronize()
    s = st.stats()
    assert s["prefetched"] > 0 and s["prefetch_errors"] == 0
    assert s["links"]["host->device"]["bytes"] > 0
    handle.restore()
    assert torch.equal(model(x), ref)
    st.close()


def test_cuda_io_uring_ssd_level_checksums_and_recovery(tmp_path, rng):
    """The io_uring backend under a CUDA device level: tensors demoted from the GPU through
    pinned host memory to the SSD level come back bit-exact on the GPU; a corrupted SSD page
    raises VGPUChecksumError while the other keys still read, and the key can be written again
    and read back (the stack keeps working)."""
    if not _native.build_info().get("vgpu_io_uring"):
        pytest.skip("apt_ext was built without liburing (carry .devtools: tools/fetch_device_tools.sh)")
    st = VGPUStack(_levels(tmp_path, 0.25, 0.25), io_backend="io_uring")
    assert st.stats()["io_backend"] == "io_uring"
    ref = random_tensors_over(rng, 3 << 20, numel_max=16384)  # 6x the two fast levels
    for k, v in ref.items():
        st.put(k, v.cuda())
    assert any(st.level(k) == 2 for k in ref)
    for k, v in ref.items():
        got = st.get(k)
        assert got.is_cuda and same_bytes(got, v), k
    st.close()

    # A page corrupted on the SSD: the read fails loudly, other keys still read, and the key
    # can be written again.
    (tmp_path / "second").mkdir()
    st = VGPUStack(_levels(tmp_path / "second", 1.0, 1.0), io_backend="io_uring")
    a, b = torch.randn(3000, generator=rng), torch.randn(3000, generator=rng)
    st.put("a", a.cuda())
    st.put("b", b.cuda())
    assert st.evict("a") and st.evict("a") and st.level("a") == 2
    corrupt_only_ssd_page(st)
    with pytest.raises(VGPUChecksumError, match="checksum"):
        st.get("a")
    assert "a" in st and same_bytes(st.get("b"), b)
    st.put("a", a.cuda())
    got = st.get("a")
    assert got.is_cuda and same_bytes(got, a)
    st.close()
