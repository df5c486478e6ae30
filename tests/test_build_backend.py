"""The build backend (tools/build_backend/apt_ext_build.py) and the import-time torch check:
an isolated build stops at once with the one-line fix, the wheel pins the torch it was built
against, and apt_ext refuses to load its _C under another torch."""
from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "build_backend"))
import apt_ext_build  # noqa: E402

from apt_ext import _native  # noqa: E402

METADATA = ("Metadata-Version: 2.2\nName: apt_ext\nVersion: 0.1.0\nRequires-Dist: torch>=2.4\n"
            "Requires-Dist: numpy\nRequires-Dist: torchvision; extra == \"x\"\n")


def test_build_system_does_not_require_torch():
    """pip installs build-system.requires before any hook runs: torch there means a GB download."""
    tomllib = pytest.importorskip("tomllib")
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    names = [r.split("[")[0].split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
             for r in build["requires"]]
    assert "torch" not in names
    assert build["build-backend"] == "apt_ext_build"
    assert (ROOT / build["backend-path"][0] / "apt_ext_build.py").is_file()


@pytest.mark.parametrize("hook", ["get_requires_for_build_wheel", "get_requires_for_build_editable",
                                  "build_wheel", "prepare_metadata_for_build_wheel"])
def test_a_build_without_torch_stops_at_once_with_the_fix(hook, tmp_path):
    """As in pip's isolated build environment: torch is not importable."""
    code = (f"import sys; sys.modules['torch'] = None; sys.path.insert(0, {str(ROOT / 'tools/build_backend')!r}); "
            f"import apt_ext_build; apt_ext_build.{hook}({str(tmp_path)!r})")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == apt_ext_build.ISOLATION_FIX
    assert proc.stderr.strip().endswith("run: pip install --no-build-isolation .")
    assert time.perf_counter() - t0 < 30


def test_build_torch_version_is_the_installed_release():
    assert apt_ext_build.build_torch_version() == torch.__version__.split("+")[0]


def test_pin_torch_replaces_only_the_torch_requirement():
    out = apt_ext_build.pin_torch(METADATA, "2.13.0")
    assert "Requires-Dist: torch==2.13.0\n" in out
    assert "torch>=2.4" not in out
    assert "Requires-Dist: numpy\n" in out and 'Requires-Dist: torchvision; extra == "x"\n' in out
    assert apt_ext_build.pin_torch(out, "2.13.0") == out  # a pinned METADATA stays as it is
    with pytest.raises(RuntimeError, match="Requires-Dist: torch"):
        apt_ext_build.pin_torch("Name: x\nRequires-Dist: numpy\n", "2.13.0")


def test_pin_torch_in_wheel_keeps_the_record_valid(tmp_path):
    whl = tmp_path / "apt_ext-0.1.0-cp311-cp311-linux_x86_64.whl"
    payload = b"print('hi')\n"

    def entry(name: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{name},sha256={digest},{len(data)}"

    record = "\n".join([entry("apt_ext/__init__.py", payload),
                        entry("apt_ext-0.1.0.dist-info/METADATA", METADATA.encode()),
                        "apt_ext-0.1.0.dist-info/RECORD,,"]) + "\n"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("apt_ext/__init__.py", payload)
        z.writestr("apt_ext-0.1.0.dist-info/METADATA", METADATA)
        z.writestr("apt_ext-0.1.0.dist-info/RECORD", record)
    apt_ext_build.pin_torch_in_wheel(whl, "2.13.0")
    with zipfile.ZipFile(whl) as z:
        meta = z.read("apt_ext-0.1.0.dist-info/METADATA")
        lines = z.read("apt_ext-0.1.0.dist-info/RECORD").decode().splitlines()
        assert z.read("apt_ext/__init__.py") == payload
    assert b"Requires-Dist: torch==2.13.0" in meta
    assert entry("apt_ext-0.1.0.dist-info/METADATA", meta) in lines
    assert entry("apt_ext/__init__.py", payload) in lines and len(lines) == 3


def test_isolated_pip_build_fails_fast_without_downloading_torch(tmp_path):
    """End to end: `pip wheel .` with build isolation, offline (--no-index, a local wheelhouse with
    only scikit-build-core and its dependencies): it must stop in the first hook with the fix."""
    wheelhouse = tmp_path / "wheelhouse"
    got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                          "-d", str(wheelhouse), "scikit-build-core", "packaging", "pathspec"],
                         capture_output=True, text=True, timeout=300)
    if got.returncode != 0:
        pytest.skip(f"no package index to fill the wheelhouse: {got.stderr.strip()[-200:]}")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-index", "--find-links", str(wheelhouse),
                           "--no-deps", "-w", str(tmp_path / "out"), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "run: pip install --no-build-isolation ." in proc.stdout + proc.stderr
    assert "torch" not in proc.stdout.split("Getting requirements")[0]  # pip never looked for a torch
    assert time.perf_counter() - t0 < 120


def test_import_refuses_another_torch():
    _native.check_torch_version("2.13.0+cpu", "2.13.0")  # same release, other local label: fine
    with pytest.raises(_native.TorchMismatchError, match=r"built against torch 2\.13\.0.*torch 2\.12\.1 is loaded"):
        _native.check_torch_version("2.13.0", "2.12.1")


def test_built_module_records_the_torch_it_was_built_against():
    if _native._build_config is None:
        pytest.skip("apt_ext._C is not built here")
    assert _native.public_version(_native._build_config.TORCH_VERSION) == _native.public_version(torch.__version__)


def test_import_apt_ext_under_another_torch_fails_with_a_clear_message():
    if _native._build_config is None:
        pytest.skip("apt_ext._C is not built here")
    code = "import torch; torch.__version__ = '2.12.1'; import apt_ext"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("apt_ext._native.TorchMismatchError: apt_ext was built against torch")
    assert "pip install --no-build-isolation ." in last
