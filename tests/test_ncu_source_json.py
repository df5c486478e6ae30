"""tools/ncu_source_json.py: Nsight Compute's per-SASS source page summed by stall reason, opcode and region."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ncu_source_json as nsj  # noqa: E402

# the page's layout (ncu 2025, --csv --print-source sass): a kernel row, a header row, a row per
# SASS line (columns cut down to the ones the tool reads, plus one it ignores)
PAGE = """"Kernel Name","void gemm_tiled_kernel<0, 1>(TiledLinearArgs)",
"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)","Instructions Executed","Address Space","stall_barrier","stall_long_sb","stall_barrier (Not Issued)"
"0x7f00000100","      LDC R1, c[0x0][0x28]","3","3","768","-","0","3","0"
"0x7f00000110","@!P0  BRA 0x7f00000200","5","4","1,536","-","1","4","1"
"0x7f00000200","      HGMMA.64x128x16.F32.BF16 R24, R96, gdesc[UR12], R24","2","0","2048","-","2","0","2"
"0x7f00000210","      UCGABAR_WAIT","40","40","96","-","40","0","40"
"0x7f00000300","      STG.E.U16 desc[UR4][R2.64], R5","0","0","512","global","0","0","0"
"""


def _write(tmp_path: Path, text: str = PAGE) -> Path:
    p = tmp_path / "source.csv"
    p.write_text(text)
    return p


def test_summary_sums_stalls_opcodes_and_regions(tmp_path):
    out = tmp_path / "out.json"
    assert nsj.main([str(_write(tmp_path)), "--out", str(out), "--card", "NVIDIA H100 80GB HBM3", "--command", "c",
                     "--region", "K loop@0x7f00000200", "--region", "epilogue@0x7f00000300"]) == 0
    res = json.loads(out.read_text())
    assert res["benchmark"] == "ncu source" and res["source"] == "source.csv"
    (k,) = res["kernels"]
    assert k["kernel"] == "void gemm_tiled_kernel<0, 1>(TiledLinearArgs)"
    assert k["samples"] == 50 and k["executed"] == 768 + 1536 + 2048 + 96 + 512
    # issued and not-issued columns are not added twice
    assert k["stall_reasons"] == {"barrier": 43, "long_sb": 7}
    assert k["opcodes"]["BRA"] == {"executed": 1536, "samples": 5}  # the predicate and target dropped
    assert k["opcodes"]["HGMMA"]["executed"] == 2048 and k["opcodes"]["STG"]["executed"] == 512
    assert k["top_lines"][0] == {"address": "0x7f00000210", "sass": "UCGABAR_WAIT", "samples": 40, "stall": "barrier"}
    assert k["regions"] == {"start": {"samples": 8, "executed": 2304}, "K loop": {"samples": 42, "executed": 2144},
                            "epilogue": {"samples": 0, "executed": 512}}


def test_no_regions_no_region_key(tmp_path):
    out = tmp_path / "out.json"
    assert nsj.main([str(_write(tmp_path)), "--out", str(out), "--card", "c", "--command", "c"]) == 0
    assert "regions" not in json.loads(out.read_text())["kernels"][0]


@pytest.mark.parametrize("bad", ["K loop", "@0x10", "K loop@zz"])
def test_bad_region_names_the_argument(tmp_path, bad, capsys):
    with pytest.raises(SystemExit):
        nsj.main([str(_write(tmp_path)), "--out", str(tmp_path / "o.json"), "--card", "c", "--command", "c",
                  "--region", bad])
    assert "NAME@HEXADDRESS" in capsys.readouterr().err


def test_regions_out_of_order_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        nsj.main([str(_write(tmp_path)), "--out", str(tmp_path / "o.json"), "--card", "c", "--command", "c",
                  "--region", "b@0x7f00000300", "--region", "a@0x7f00000200"])
    assert "ascending" in capsys.readouterr().err


def test_page_without_sass_lines_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        nsj.main([str(_write(tmp_path, '"Kernel Name","k",\n')), "--out", str(tmp_path / "o.json"),
                  "--card", "c", "--command", "c"])
    assert "no kernel with SASS lines" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        nsj.main([str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o.json"), "--card", "c", "--command", "c"])
    assert "no such file" in capsys.readouterr().err
