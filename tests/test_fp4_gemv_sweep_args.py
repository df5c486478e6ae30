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


def _case(us: float) -> dict:
    return {"us": us, "GBs": 9.4e6 / (us * 1e-6) / 1e9, "us_clean": us * 0.9, "GBs_clean": 0.0, "rel_err": 0.0017}


@pytest.mark.parametrize("warm", [False, True])
def test_print_table(capsys, warm):
    """The table prints every timing the JSON holds; a JSON from before us_warm prints '-' there."""
    base = {"bf16_us": 22.0, "bf16_us_clean": 21.0, "canonical_us": 30.0, "read_floor_us": 12.0,
            "read_floor_us_clean": 11.0}
    case = _case(11.0)
    if warm:
        base["bf16_us_warm"], case["us_warm"] = 15.0, 5.0
    res = {"copy_bandwidth_GBs": 3000.0, "baseline": {"4096x4096/1": base},
           "variants": {"default": {"4096x4096/1": case}, "bad": {"error": "boom"}}}
    fp4_gemv_sweep.print_table(res)
    out = capsys.readouterr().out
    warm_block = out.split("L2 warm")[1]
    assert "FAILED" in warm_block and "max rel. err 0.0017" in warm_block
    if warm:
        assert "bf16 warm" in out and "5.0us" in warm_block and "3.00x" in warm_block
    else:
        assert "bf16 warm" not in out and "-" in warm_block.splitlines()[1]
