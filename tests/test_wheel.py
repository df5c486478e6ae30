"""A wheel for other machines: built with `pip wheel --no-build-isolation`, it pins the torch it
was compiled against, needs no liburing or libxxhash at run time (liburing is linked statically,
xxhash compiled in), and, installed into a clean virtual environment on a system whose
liburing and libxxhash files are made unreadable, imports and runs the pager's SSD tier."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from apt_ext import _native

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# Run inside the clean environment: apt_ext from the wheel, the pager's SSD tier with io_uring
# (when this kernel allows it) and XXH3 checksums, a put/get round trip through the SSD.
CLEAN_ENV_SCRIPT = textwrap.dedent("""
    import json, sys, tempfile, torch, apt_ext
    from apt_ext import _native
    from apt_ext.vgpu import VGPUStack
    assert apt_ext.__file__.startswith(sys.prefix), apt_ext.__file__
    info = _native.build_info()
    with tempfile.TemporaryDirectory() as d:
        st = VGPUStack([{"device": "cpu", "capacity_mb": 0.0625}, {"device": "ssd", "capacity_mb": 4, "path": d}])
        ts = {f"t{i}": torch.randn(4096) for i in range(8)}   # 128 KiB: most go to the SSD
        for k, t in ts.items():
            st.put(k, t)
        assert all(torch.equal(st.get(k), t) for k, t in ts.items())
        s = st.stats()
        st.close()
    print(json.dumps({"io_uring_compiled": info["vgpu_io_uring"], "xxhash_compiled": info["vgpu_xxhash"],
                      "io_backend": s["io_backend"], "checksum": s["checksum"],
                      "ssd_entries": s["levels"][1]["entries"]}))
""")


def system_lib(name: str) -> Path | None:
    """The real file of a system shared library (e.g. 'liburing.so'), or None."""
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu"):
        for p in sorted(Path(d).glob(name + "*")):
            if p.is_file() and not p.is_symlink():
                return p
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if _native._C is None:
        pytest.skip("apt_ext._C is not built here")
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = out.glob("apt_ext-*.whl")
    return whl


def test_wheel_pins_the_torch_it_was_built_for(wheel):
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        names = z.namelist()
    torch_reqs = re.findall(r"^Requires-Dist: (torch\b.*)$", meta, re.M)
    assert torch_reqs == [f"torch=={torch.__version__.split('+')[0]}"]
    assert "apt_ext/_build_config.py" in names


def test_wheel_needs_neither_liburing_nor_libxxhash(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        (so,) = [n for n in z.namelist() if re.fullmatch(r"apt_ext/_C\..*\.so", n)]
        z.extract(so, tmp_path)
    dyn = subprocess.run(["readelf", "-d", str(tmp_path / so)], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn)
    assert needed, dyn
    assert not [n for n in needed if "uring" in n or "xxhash" in n], needed
    exported = subprocess.run(["nm", "-D", "--defined-only", str(tmp_path / so)], capture_output=True,
                              text=True, check=True).stdout
    assert "io_uring_queue_init" not in exported  # the static liburing stays private to the module


def test_wheel_runs_in_a_clean_environment_without_the_libraries(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=300)
    # torch and the other dependencies from this environment (a path, not a site dir: its .pth
    # files, among them the editable apt_ext's, are not read)
    (site / "deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    hidden = [p for p in (system_lib("liburing.so"), system_lib("libxxhash.so")) if p is not None]
    script = tmp_path / "check.py"
    script.write_text(CLEAN_ENV_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_"))}
    cmd = [str(py), str(script)]
    if hidden and os.geteuid() == 0:
        binds = " && ".join(f"mount --bind /dev/null {p}" for p in hidden)
        probe = subprocess.run(["unshare", "--mount", "sh", "-c", f"{binds} && true"], capture_output=True)
        if probe.returncode == 0:  # a private mount namespace in which the libraries' files are empty
            cmd = ["unshare", "--mount", "sh", "-c", f"{binds} && exec \"$0\" \"$@\"", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["io_uring_compiled"] == _native.build_info()["vgpu_io_uring"]
    assert report["xxhash_compiled"] == _native.build_info()["vgpu_xxhash"]
    assert report["ssd_entries"] > 0
    if report["xxhash_compiled"]:
        assert report["checksum"] == "xxh3_64"
