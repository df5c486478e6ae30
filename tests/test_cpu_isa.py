"""The one CPU-feature detector (csrc/cpu_isa.h): its paths and flags against /proc/cpuinfo and
CMakeLists.txt, forcing a path, and what build_info() and capabilities() report from it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import apt_ext
from apt_ext import _native
from reference import fp4 as ref

ROOT = Path(__file__).resolve().parents[1]
PATHS = {p["name"]: p for p in _native._C.cpu_isa.paths()}
ENVS = {"fp4": "APT_FP4_CPU_ISA", "left_spin": "APT_LEFT_SPIN_CPU_ISA"}


def cpuinfo_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    m = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set(m.group(1).split()) if m else None


def test_paths_are_scalar_avx2_avx512_with_their_flags():
    assert list(PATHS) == ["scalar", "avx2", "avx512"]
    assert PATHS["scalar"]["requires"] == [] and PATHS["scalar"]["supported"]
    assert set(PATHS["avx2"]["requires"]) == {"avx2", "fma", "f16c"}
    # The AVX-512 kernels use VL and DQ forms too (not only F and BW) and are built with the AVX2 flags.
    assert set(PATHS["avx512"]["requires"]) == {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma", "f16c"}


@pytest.mark.skipif(cpuinfo_flags() is None, reason="no /proc/cpuinfo flags line (not Linux)")
def test_supported_means_compiled_and_every_flag_in_cpuinfo():
    flags = cpuinfo_flags()
    for name, p in PATHS.items():
        assert p["supported"] == (p["compiled"] and set(p["requires"]) <= flags), name


def test_cmake_compiles_each_path_with_exactly_its_flags():
    text = (ROOT / "CMakeLists.txt").read_text()
    for name in ("avx2", "avx512"):
        m = re.search(rf"set\(APT_ISA_FLAGS_{name}\s+([^)]*)\)", text)
        assert m, f"CMakeLists.txt: no APT_ISA_FLAGS_{name}"
        assert m.group(1).split() == PATHS[name]["requires"], name


def test_parallel_for_uses_torch_threads():
    # at::parallel_for compiled without OpenMP silently runs every CPU kernel on one thread.
    assert _native.build_info()["cpu_parallel_for"] is True


def test_build_info_reports_the_same_detector():
    info = _native.build_info()
    assert info["cpu_avx2"] == PATHS["avx2"]["supported"]
    assert info["cpu_avx512"] == PATHS["avx512"]["supported"]


@pytest.mark.parametrize("cap", list(ENVS))
def test_every_supported_path_can_be_forced(cap, monkeypatch):
    best = [n for n, p in PATHS.items() if p["supported"]][-1]
    monkeypatch.delenv(ENVS[cap], raising=False)
    assert _native._C.cpu_isa.in_use()[cap]["path"] == best
    for name, p in PATHS.items():
        if p["supported"]:
            monkeypatch.setenv(ENVS[cap], name)
            use = _native._C.cpu_isa.in_use()[cap]
            assert use == {"env": ENVS[cap], "path": name, "requires": p["requires"]}


def test_unknown_or_unsupported_path_is_a_clear_error(monkeypatch):
    q = ref.quantize(torch.randn(2, 16), "nvfp4")
    monkeypatch.setenv("APT_FP4_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match="APT_FP4_CPU_ISA: 'sse9' is not one of scalar, avx2, avx512"):
        torch.ops.apt.fp4_linear(torch.randn(1, 16), *q, None, "nvfp4", 16)
    assert "sse9" in _native._C.cpu_isa.in_use()["fp4"]["error"]   # reported, not raised
    missing = [n for n, p in PATHS.items() if not p["supported"]]
    if not missing:
        pytest.skip("this CPU runs every path")
    monkeypatch.setenv("APT_FP4_CPU_ISA", missing[-1])
    lacks = [f for f in PATHS[missing[-1]]["requires"] if f not in (cpuinfo_flags() or set())]
    with pytest.raises(ValueError, match="is not supported here") as e:
        torch.ops.apt.fp4_linear(torch.randn(1, 16), *q, None, "nvfp4", 16)
    if PATHS[missing[-1]]["compiled"] and cpuinfo_flags() is not None:
        assert f"this CPU lacks {', '.join(lacks)}" in str(e.value)


def test_capabilities_names_the_fp4_path_and_its_flags(monkeypatch):
    monkeypatch.setenv("APT_FP4_CPU_ISA", "scalar")
    caps = apt_ext.capabilities()["cpu_isa"]
    assert caps["fp4"] == {"env": "APT_FP4_CPU_ISA", "path": "scalar", "requires": []}
    assert [p["name"] for p in caps["paths"]] == list(PATHS)
    monkeypatch.delenv("APT_FP4_CPU_ISA")
    best = [n for n, p in PATHS.items() if p["supported"]][-1]
    assert apt_ext.capabilities()["cpu_isa"]["fp4"]["requires"] == PATHS[best]["requires"]


def test_info_prints_the_paths_in_use():
    out = subprocess.run([sys.executable, "-m", "apt_ext.cli.main", "info", "--no-ping"], capture_output=True,
                         text=True, check=True, env={**os.environ, "APT_FP4_CPU_ISA": "scalar"}).stdout
    assert "fp4 CPU kernels: scalar (needs no SIMD flags)" in out
