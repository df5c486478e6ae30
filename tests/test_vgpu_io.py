"""The SSD level: both I/O backends, checksums, filesystems without O_DIRECT, full disks and
read errors. Mount-based tests use a real small filesystem when this process may mount one
(root in a permissive container), else the pager's APT_VGPU_FAULT fault injection."""
from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import subprocess

import pytest
import torch

from apt_ext.vgpu import VGPUCapacityError, VGPUChecksumError, VGPUIOError, VGPUStack
from vgpu_helpers import corrupt_only_ssd_page, random_tensor, same_bytes


def _levels(path, host_mb: float = 0.125, ssd_mb: float = 32) -> list[dict]:
    return [{"device": "cpu", "capacity_mb": host_mb}, {"device": "ssd", "capacity_mb": ssd_mb, "path": str(path)}]


@contextlib.contextmanager
def _mounted(path, fstype: str, options: str = ""):
    """Mount a fresh `fstype` at `path`; yields False (nothing mounted) when not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield False
        return
    cmd = ["mount", "-t", fstype] + (["-o", options] if options else []) + [fstype, str(path)]
    ok = subprocess.run(cmd, capture_output=True).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _uring_or_skip(path) -> None:
    try:
        VGPUStack(_levels(path), io_backend="io_uring").close()
    except RuntimeError as exc:
        pytest.skip(f"io_uring unavailable here: {exc}")


def _workload(st: VGPUStack, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    py = random.Random(seed)
    ref = {}
    for step in range(600):
        if ref and py.random() < 0.5:
            k = py.choice(list(ref))
            assert same_bytes(st.get(k), ref[k]), f"step {step}: {k}"
        else:
            k = f"k{py.randrange(120)}"
            ref[k] = random_tensor(g, 16384)
            st.put(k, ref[k])
    return ref


@pytest.mark.parametrize("backend", ["pread", "io_uring"])
def test_backends_identical(tmp_path, backend):
    if backend == "io_uring":
        _uring_or_skip(tmp_path)
    results = {}
    for b in dict.fromkeys(("pread", backend)):
        st = VGPUStack(_levels(tmp_path / b), io_backend=b, queue_depth=8)
        assert st.stats()["io_backend"] == b
        ref = _workload(st, seed=7)
        results[b] = {k: st.get(k, device="cpu") for k in ref}
        assert all(same_bytes(results[b][k], ref[k]) for k in ref)
        assert st.stats()["links"]["ssd->host"]["bytes"] > 0
        st.close()
    assert results["pread"].keys() == results[backend].keys()
    assert all(same_bytes(results["pread"][k], results[backend][k]) for k in results["pread"])


def test_env_forces_pread(tmp_path, monkeypatch):
    monkeypatch.setenv("APT_VGPU_IO", "pread")
    st = VGPUStack(_levels(tmp_path))
    s = st.stats()
    assert s["io_backend"] == "pread" and "APT_VGPU_IO" in s["io_note"]
    st.close()


def test_checksum_detects_flipped_byte(tmp_path):
    st = VGPUStack(_levels(tmp_path))
    a, b = torch.randn(3000), torch.randn(3000)
    st.put("a", a)
    st.put("b", b)
    assert st.evict("a") and st.level("a") == 1
    corrupt_only_ssd_page(st)
    with pytest.raises(VGPUChecksumError, match="checksum"):
        st.get("a")
    assert "a" in st and same_bytes(st.get("b"), b)
    assert st.stats()["checksum"] in ("xxh3_64", "crc32 (zlib)")
    st.close()


def test_filesystem_without_o_direct(tmp_path, monkeypatch):
    """ramfs refuses O_DIRECT (EINVAL); without mount rights, /dev/shm if it refuses it, else
    the injected refusal (APT_VGPU_FAULT=no_odirect)."""
    with _mounted(tmp_path / "ramfs", "ramfs") as mounted:
        if mounted:
            where = tmp_path / "ramfs"
        else:
            where = tmp_path / "plain"
            try:
                fd = os.open("/dev/shm/apt_vgpu_probe", os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
                os.close(fd)
                monkeypatch.setenv("APT_VGPU_FAULT", "no_odirect")
            except OSError:
                where = "/dev/shm"
            finally:
                with contextlib.suppress(OSError):
                    os.unlink("/dev/shm/apt_vgpu_probe")
        st = VGPUStack(_levels(where))
        assert st.stats()["o_direct"] is False
        assert st.stats()["io_backend"] == "pread" and "O_DIRECT" in st.stats()["io_note"]
        ref = _workload(st, seed=3)
        assert all(same_bytes(st.get(k), v) for k, v in ref.items())
        st.close()


def test_o_direct_used_where_allowed(tmp_path):
    try:
        fd = os.open(tmp_path / "probe", os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
        os.close(fd)
    except OSError as exc:
        pytest.skip(f"{tmp_path} refuses O_DIRECT: {exc}")
    st = VGPUStack(_levels(tmp_path / "ssd"))
    assert st.stats()["o_direct"] is True
    st.close()


def test_disk_full_enospc(tmp_path, monkeypatch):
    """A 256 KiB tmpfs under an SSD level that claims 8 MiB: the write fails with ENOSPC, the
    put raises VGPUIOError and every stored tensor stays readable (the victim stays in the host
    level). Without mount rights: APT_VGPU_FAULT=enospc_after=<bytes>."""
    with _mounted(tmp_path / "small", "tmpfs", "size=256k") as mounted:
        if not mounted:
            monkeypatch.setenv("APT_VGPU_FAULT", f"enospc_after={256 << 10}")
        st = VGPUStack(_levels(tmp_path / "small", host_mb=0.125, ssd_mb=8))
        ref = {}
        with pytest.raises(VGPUIOError) as info:
            for i in range(200):
                t = torch.randn(4096)  # 16 KiB
                st.put(f"t{i}", t)
                ref[f"t{i}"] = t
        assert info.value.errno == errno.ENOSPC and "ENOSPC" in str(info.value)
        assert len(ref) > 8 and f"t{len(ref)}" not in st
        assert all(same_bytes(st.get(k, device="cpu"), v) for k, v in ref.items())
        st.close()


def test_read_error_eio(tmp_path, monkeypatch):
    monkeypatch.setenv("APT_VGPU_FAULT", "eio_read")
    st = VGPUStack(_levels(tmp_path))
    t = torch.randn(1000)
    st.put("a", t)
    st.evict("a")
    with pytest.raises(VGPUIOError) as info:
        st.get("a")
    assert info.value.errno == errno.EIO and "a" in st and st.level("a") == 1
    st.close()


def test_capacity_error_with_ssd(tmp_path):
    st = VGPUStack(_levels(tmp_path, host_mb=0.0625, ssd_mb=0.125))
    stored = {}
    with pytest.raises(VGPUCapacityError):
        for i in range(100):
            t = torch.randn(2048)
            st.put(f"t{i}", t)
            stored[f"t{i}"] = t
    assert len(stored) == 24
    assert all(same_bytes(st.get(k), v) for k, v in stored.items())
    st.close()


@pytest.mark.parametrize("backend", ["pread", "io_uring"])
@pytest.mark.parametrize("chunk_mb", [1, 4, 0.75])
def test_large_page_small_queue_depth(tmp_path, backend, chunk_mb):
    """An 8 MiB page is 8 (2, 11: the last one short) requests of io_chunk_mb: with queue_depth=2
    the submitter waits for room."""
    if backend == "io_uring":
        _uring_or_skip(tmp_path)
    st = VGPUStack(_levels(tmp_path, host_mb=9, ssd_mb=32), io_backend=backend, queue_depth=2, io_chunk_mb=chunk_mb)
    t = torch.randn(2 << 20)
    st.put("big", t)
    st.evict("big")
    assert st.level("big") == 1
    assert same_bytes(st.get("big"), t) and st.level("big") == 0
    st.close()


def test_slab_free_blocks_coalesce(tmp_path):
    """16 freed 4 KiB blocks merge back into one 64 KiB block of the host slab."""
    st = VGPUStack(_levels(tmp_path, host_mb=64 / 1024, ssd_mb=1))
    for i in range(16):
        st.put(f"s{i}", torch.randn(1024))
    assert all(st.level(f"s{i}") == 0 for i in range(16))
    for i in list(range(0, 16, 2)) + list(range(1, 16, 2)):  # free in an interleaved order
        st.remove(f"s{i}")
    big = torch.randn(16 * 1024)
    st.put("big", big)
    assert st.level("big") == 0 and same_bytes(st.get("big"), big)
    st.close()
