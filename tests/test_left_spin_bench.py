"""benchmarks/left_spin.py's autocast-site part on the CPU at a tiny shape: both forms run, agree,
and render into RESULTS.md's table (the timings themselves belong to the benchmark, not here)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import left_spin as bench  # noqa: E402
import render_results  # noqa: E402


def test_autocast_site_times_both_forms_and_they_agree():
    calls = []

    def timer(fn, quick):  # runs the case once instead of timing it
        calls.append(fn())
        return 1.0

    rows = bench.autocast_site([(6, 40)], "cpu", timer, True, torch.Generator().manual_seed(0))
    timed = [r for r in rows if "ms" in r]
    assert {(r["impl"], r["mode"]) for r in timed} == {
        (f, m) for f in ("bf16 du as is", "du cast to float32 first") for m in ("forward", "forward+backward")}
    assert all(r["bytes"] == bench.SITE_BYTES[r["mode"]] * 6 * 40 for r in timed)
    (diffs,) = [r["max_abs_diff_between_forms"] for r in rows if "max_abs_diff_between_forms" in r]
    assert set(diffs) == {"out", "phi", "grad_u", "grad_du", "grad_du_prev", "grad_phi_prev"}
    assert max(diffs.values()) == 0.0  # the CPU op widens bf16 exactly: the same bits either way
    assert len(calls) == 4
    lines = render_results.autocast_site_lines(rows)
    assert any("| 6 x 40 | forward+backward |" in line for line in lines[-1].splitlines())
