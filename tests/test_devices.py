"""Device detection (SPEC 6): the CPU for real; HPU/NPU/XPU through vendor packages injected on
sys.path that are absent, present, or raise on import."""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from apt_ext import devices
from apt_ext.devices import manager as dm

FAKE_BACKEND = """
import torch

class _Backend:
    calls = []
    @staticmethod
    def is_available(): return True
    @staticmethod
    def device_count(): return {count}
    @staticmethod
    def memory_allocated(device=None): return 111
    @staticmethod
    def memory_reserved(device=None): return 222
    @staticmethod
    def max_memory_allocated(device=None): return 333
    @staticmethod
    def empty_cache(): _Backend.calls.append("empty_cache")
    @staticmethod
    def synchronize(device=None): _Backend.calls.append("synchronize")
    @staticmethod
    def manual_seed_all(seed): _Backend.calls.append(("seed", seed))

torch.{attr} = _Backend
{rename}
"""
# What the real torch_npu does on import: name torch's PrivateUse1 backend "npu".
NPU_RENAME = """
if torch._C._get_privateuse1_backend_name() != "npu":
    torch.utils.rename_privateuse1_backend("npu")
"""


@pytest.fixture
def vendor_path(tmp_path, monkeypatch):
    """A folder on sys.path where tests write fake vendor packages; cleaned up afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("APT_DEVICE", raising=False)
    added = []

    def write(package: str, source: str) -> None:
        d = tmp_path.joinpath(*package.split("."))
        d.mkdir(parents=True, exist_ok=True)
        for parent in list(d.relative_to(tmp_path).parents)[:-1]:
            (tmp_path / parent / "__init__.py").touch()
        (d / "__init__.py").write_text(textwrap.dedent(source))
        added.append(package)

    yield write
    for name in list(sys.modules):
        if any(name == p or name.startswith(p.split(".")[0]) for p in added):
            sys.modules.pop(name, None)
    for attr in ("hpu", "npu"):
        if hasattr(torch, attr) and getattr(getattr(torch, attr), "__name__", "") == "_Backend":
            monkeypatch.delattr(torch, attr, raising=False)
    devices.reset_device_manager()


def test_cpu_is_detected_for_real(monkeypatch):
    monkeypatch.delenv("APT_DEVICE", raising=False)
    devices.reset_device_manager()
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the CPU is not the best device")
    assert devices.get_device() == torch.device("cpu")
    m = devices.get_device_manager()
    assert m is devices.get_device_manager()  # singleton
    assert m.get_accelerator_type() == "cpu"
    assert m.device_count() == 1
    assert m.memory_allocated() == 0 and m.memory_reserved() == 0 and m.max_memory_allocated() == 0
    m.empty_cache()
    m.synchronize()
    m.manual_seed(123)
    a = torch.rand(3)
    m.manual_seed(123)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(TypeError, match="seed"):
        m.manual_seed("x")


def test_absent_vendors_are_reported_with_reason(vendor_path):
    probes = devices.probe_all()
    assert not probes["hpu"].available and "not installed" in probes["hpu"].reason
    assert not probes["npu"].available and "not installed" in probes["npu"].reason
    assert probes["cpu"].available


def test_npu_package_that_fails_to_initialise_is_unavailable_not_a_crash(vendor_path):
    vendor_path("torch_npu", 'raise RuntimeError("libascendcl.so: cannot open shared object file")\n')
    probe = devices.probe_all()["npu"]
    assert not probe.available
    assert "failed to initialise" in probe.reason and "libascendcl" in probe.reason
    assert devices.get_device().type in ("cpu", "cuda")


def test_present_npu_is_selected_and_manager_uses_its_module(vendor_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA outranks NPU")
    vendor_path("torch_npu", FAKE_BACKEND.format(count=2, attr="npu", rename=NPU_RENAME))
    assert devices.get_device() == torch.device("npu", 0)
    m = dm.DeviceManager()
    assert m.get_accelerator_type() == "npu" and m.device_count() == 2
    assert (m.memory_allocated(), m.memory_reserved(), m.max_memory_allocated()) == (111, 222, 333)
    m.empty_cache()
    m.synchronize()
    m.manual_seed(7)
    # torch.accelerator may serve synchronize itself; seeding must reach the vendor module.
    assert ("seed", 7) in torch.npu.calls


def test_hpu_outranks_npu(vendor_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA outranks HPU")
    vendor_path("habana_frameworks.torch", FAKE_BACKEND.format(count=8, attr="hpu", rename=""))
    vendor_path("torch_npu", FAKE_BACKEND.format(count=2, attr="npu", rename=NPU_RENAME))
    assert devices.get_device() == torch.device("hpu", 0)


def test_detection_order_is_the_spec_order():
    assert devices.ORDER == ("cuda", "hpu", "npu", "xpu", "mps", "cpu")


def test_apt_device_override(monkeypatch):
    monkeypatch.setenv("APT_DEVICE", "cpu")
    assert devices.get_device() == torch.device("cpu")
    monkeypatch.setenv("APT_DEVICE", "npu")
    with pytest.raises(ValueError, match="APT_DEVICE='npu': npu is unavailable"):
        devices.get_device()
    monkeypatch.setenv("APT_DEVICE", "banana:0")
    with pytest.raises(ValueError, match="APT_DEVICE"):
        devices.get_device()
