"""Device detection (docs/contract.md §6): the CPU for real; HPU/NPU through vendor packages that are absent,
present, or raise on import. Injected vendor packages change torch process-wide (a real torch_npu
renames torch's PrivateUse1 backend), so every injection runs in a fresh interpreter."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from apt_ext import devices

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
NPU_PRESENT = FAKE_BACKEND.format(count=2, attr="npu", rename=NPU_RENAME)
HPU_PRESENT = FAKE_BACKEND.format(count=8, attr="hpu", rename="")
NPU_BROKEN = 'raise RuntimeError("libascendcl.so: cannot open shared object file")\n'


def run_with_vendors(tmp_path: Path, packages: dict[str, str], body: str, env: dict | None = None) -> dict:
    """Write fake vendor packages under tmp_path, run ``body`` (which sets ``result``) in a fresh
    interpreter that sees them, and return ``result`` (JSON)."""
    for package, source in packages.items():
        d = tmp_path.joinpath(*package.split("."))
        d.mkdir(parents=True, exist_ok=True)
        for parent in list(d.relative_to(tmp_path).parents)[:-1]:
            (tmp_path / parent / "__init__.py").touch()
        (d / "__init__.py").write_text(textwrap.dedent(source))
    script = ("import json, torch\nfrom apt_ext import devices\nfrom apt_ext.devices import manager as dm\n"
              + textwrap.dedent(body) + "\nprint('RESULT=' + json.dumps(result))\n")
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    full_env.pop("APT_DEVICE", None)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=full_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT=")][-1]
    return json.loads(line[len("RESULT="):])


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


def test_absent_vendors_are_reported_with_reason(tmp_path):
    r = run_with_vendors(tmp_path, {}, """
        p = devices.probe_all()
        result = {t: [p[t].available, p[t].reason] for t in p}
    """)
    assert r["hpu"][0] is False and "not installed" in r["hpu"][1]
    assert r["npu"][0] is False and "not installed" in r["npu"][1]
    assert r["cpu"][0] is True


def test_npu_package_that_fails_to_initialise_is_unavailable_not_a_crash(tmp_path):
    r = run_with_vendors(tmp_path, {"torch_npu": NPU_BROKEN}, """
        p = devices.probe_all()["npu"]
        result = {"available": p.available, "reason": p.reason, "device": devices.get_device().type}
    """)
    assert r["available"] is False
    assert "failed to initialise" in r["reason"] and "libascendcl" in r["reason"]
    assert r["device"] in ("cpu", "cuda")


def test_present_npu_is_selected_and_manager_uses_its_module(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA outranks NPU")
    r = run_with_vendors(tmp_path, {"torch_npu": NPU_PRESENT}, """
        m = dm.DeviceManager()
        m.empty_cache(); m.synchronize(); m.manual_seed(7)
        result = {"device": str(devices.get_device()), "type": m.get_accelerator_type(),
                  "count": m.device_count(),
                  "mem": [m.memory_allocated(), m.memory_reserved(), m.max_memory_allocated()],
                  "calls": [list(c) if isinstance(c, tuple) else c for c in torch.npu.calls]}
    """)
    assert r["device"] == "npu:0" and r["type"] == "npu" and r["count"] == 2
    assert r["mem"] == [111, 222, 333]
    # torch.accelerator may serve synchronize itself; seeding must reach the vendor module.
    assert ["seed", 7] in r["calls"]


def test_hpu_outranks_npu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA outranks HPU")
    r = run_with_vendors(tmp_path, {"habana_frameworks.torch": HPU_PRESENT, "torch_npu": NPU_PRESENT},
                         "result = str(devices.get_device())")
    assert r == "hpu:0"


def test_apt_device_override(tmp_path, monkeypatch):
    monkeypatch.setenv("APT_DEVICE", "cpu")
    assert devices.get_device() == torch.device("cpu")
    monkeypatch.setenv("APT_DEVICE", "npu")
    with pytest.raises(ValueError, match="APT_DEVICE='npu': npu is unavailable"):
        devices.get_device()
    monkeypatch.setenv("APT_DEVICE", "banana:0")
    with pytest.raises(ValueError, match="APT_DEVICE"):
        devices.get_device()
    r = run_with_vendors(tmp_path, {"torch_npu": NPU_PRESENT}, "result = str(devices.get_device())",
                         env={"APT_DEVICE": "npu:1"})
    assert r == "npu:1"
    r = run_with_vendors(tmp_path, {"torch_npu": NPU_PRESENT}, """
        try:
            devices.check_device("npu:2", "--device")
        except ValueError as exc:
            result = str(exc)
    """)
    assert r == "--device='npu:2': this machine has 2 npu device(s)"


def test_check_device():
    assert devices.check_device("cpu") == torch.device("cpu")
    assert devices.check_device(torch.device("cpu"), "x") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^--device: 'gpu' is not a device string such as 'cpu' or 'cuda:0'"):
        devices.check_device("gpu", "--device")
    with pytest.raises(TypeError, match="^device: expected a device string"):
        devices.check_device(0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^device='cuda:0': cuda is unavailable here: "):
            devices.check_device("cuda:0")


def test_threads_for_load():
    assert devices.threads_for_load(cpus=2, load=0.0) == 2
    assert devices.threads_for_load(cpus=2, load=0.4) == 2
    assert devices.threads_for_load(cpus=2, load=1.3) == 1
    assert devices.threads_for_load(cpus=2, load=9.0) == 1       # a loaded machine: one thread, never 0
    assert devices.threads_for_load(cpus=16, load=3.2) == 13
    assert 1 <= devices.threads_for_load() <= devices.available_cpus()
    with pytest.raises(ValueError, match="cpus"):
        devices.threads_for_load(cpus=0, load=0.0)
    with pytest.raises(ValueError, match="load"):
        devices.threads_for_load(cpus=2, load=float("nan"))
