"""The FP4 benchmark scripts' own logic on the CPU: fp4_cpu.py's smoke run records, per case,
the share of the cores other processes and the hypervisor took; fp4_triton_configs.py parses the
extra GEMV bases it is asked to time and refuses malformed ones."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import fp4_cpu  # noqa: E402
import fp4_triton_configs  # noqa: E402


def test_fp4_cpu_quick_records_core_shares(tmp_path):
    out = tmp_path / "cpu.json"
    threads = torch.get_num_threads()
    try:
        fp4_cpu.main(["--quick", "--repeats", "1", "--threads", "1", "--out", str(out), "--plot", str(tmp_path / "p.png")])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["paired_threads"] and result["speed"]
    for row in result["speed"]:
        assert row["nvfp4_ms"] > 0 and row["torch_int4_ms"] > 0
        if Path("/proc/stat").exists():
            assert 0.0 <= row["others_cpu_pct"] <= 100.0 and 0.0 <= row["steal_pct"] <= 100.0


def test_share_between_arithmetic(monkeypatch):
    monkeypatch.setattr(fp4_cpu.os, "cpu_count", lambda: 2)
    # 2 s of wall on 2 cores: every process busy 3 s, this one 1 s, the hypervisor took 0.4 s
    share = fp4_cpu.share_between((10.0, 5.0, 100.0, 7.0), (12.0, 6.0, 103.0, 7.4))
    assert share == pytest.approx({"others_cpu_pct": 50.0, "steal_pct": 10.0})
    assert fp4_cpu.share_between(None, (1.0, 0.0, 0.0, 0.0)) == {}


def test_triton_configs_gemv_bases():
    assert fp4_triton_configs.base_list("16x2048x8x4,8x4096x8x4") == [(16, 2048, 8, 4), (8, 4096, 8, 4)]
    assert fp4_triton_configs.base_list("") == []
    for bad in ("16x2048x8", "16x2048x6x4", "16x32x8x4", "axbxcxd", "16x2048x8x0"):
        with pytest.raises(argparse.ArgumentTypeError, match="--gemv-bases"):
            fp4_triton_configs.base_list(bad)
