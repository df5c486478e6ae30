"""benchmarks/fp4_gemv_sweep.py's arguments (the sweep itself needs a GPU): --shapes and
--profile-shape take NxK lists and refuse anything else by name."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import fp4_gemv_sweep  # noqa: E402


def test_parse_shapes():
    assert fp4_gemv_sweep.parse_shapes("768x768,3072X768") == [(768, 768), (3072, 768)]
    assert fp4_gemv_sweep.parse_shapes(",".join(f"{n}x{k}" for n, k in fp4_gemv_sweep.SHAPES)) == fp4_gemv_sweep.SHAPES


@pytest.mark.parametrize("bad", ["7x", "0x4", "4x-1", "a,b", "4x4x4", ""])
def test_parse_shapes_refuses(bad):
    with pytest.raises(ValueError, match="NxK"):
        fp4_gemv_sweep.parse_shapes(bad)


@pytest.mark.parametrize("args, message", [(["--shapes", "7x"], "--shapes"),
                                           (["--profile-shape", "1x2,3x4"], "expected one NxK")])
def test_command_line_refuses(args, message):
    proc = subprocess.run([sys.executable, str(BENCH / "fp4_gemv_sweep.py"), *args], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr
