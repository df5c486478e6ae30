"""If apt_ext._C cannot be loaded, `import apt_ext` still works and the first use of a native op
raises NativeLoadError carrying the ORIGINAL load error and the command that fixes it."""
from __future__ import annotations

import json
import subprocess
import sys

CHILD = r'''
import importlib.abc, json, sys

class BrokenExtension(importlib.abc.MetaPathFinder):
    """Fails the import of apt_ext._C as a torch ABI mismatch would."""
    def find_spec(self, name, path=None, target=None):
        if name == "apt_ext._C":
            raise ImportError("apt_ext/_C.so: undefined symbol: _ZN3c1017simulated_abi_mismatch")
        return None

sys.meta_path.insert(0, BrokenExtension())
import torch
import apt_ext
from apt_ext._native import NativeLoadError

out = {"caps": apt_ext.capabilities(), "errors": {}}
calls = {
    "torch.ops": lambda: torch.ops.apt.fp4_quantize(torch.randn(4, 16), "nvfp4", 16),
    "fp4.quantize": lambda: apt_ext.fp4.quantize(torch.randn(4, 16)),
    "FP4Linear": lambda: apt_ext.nn.FP4Linear(16, 8),
    "left_spin": lambda: apt_ext.left_spin.left_spin_residual(torch.randn(2, 8), torch.randn(2, 8)),
    "vgpu": lambda: __import__("apt_ext.vgpu"),
    "attention": lambda: __import__("apt_ext.attention"),
}
import apt_ext.nn, apt_ext.left_spin
for name, call in calls.items():
    try:
        call()
        out["errors"][name] = None
    except NativeLoadError as exc:
        out["errors"][name] = str(exc)
print(json.dumps(out, default=str))
'''


def test_broken_native_extension_fails_loudly_on_first_use():
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    caps = out["caps"]
    assert caps["native_loaded"] is False and "simulated_abi_mismatch" in caps["native_error"]
    assert all(not b["usable"] for e in caps["ops"].values() for b in e.values())
    for name, msg in out["errors"].items():
        assert msg is not None, f"{name}: no NativeLoadError"
        assert "simulated_abi_mismatch" in msg, f"{name}: the original load error is missing: {msg}"
        assert "pip install --no-build-isolation" in msg, f"{name}: says nothing about the fix: {msg}"
    assert "torch.ops.apt.fp4_quantize" in out["errors"]["torch.ops"]
