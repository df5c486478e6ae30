"""benchmarks/model_throughput.py's A/B variants on the CPU at a tiny size: left-spin-cast-first
casts the branch before the op, left-spin-op builds its sites with the op compiled form
(the others take the default, decomposed), autopoietic-sum-op takes the prefix mean through the running-sum op,
autopoietic-fused runs q/k/v, W_g and U as one matmul, and each row records its fastest step (timings
belong to the benchmark)."""
from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import model_throughput as bench  # noqa: E402
import render_results  # noqa: E402

TINY = dict(vocab=64, d_model=32, layers=1, heads=2, seq_len=16, batch=2)


def test_ab_variants(left_spin_op_dtypes, monkeypatch):
    built = []
    real = bench.APTModel

    def spy(cfg):
        built.append(cfg.left_spin_compiled_form)
        return real(cfg)

    monkeypatch.setattr(bench, "APTModel", spy)
    # a bf16 branch beside the float32 stream, as under autocast on a GPU
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: torch.nn.functional.linear(
        x.to(self.weight.dtype), self.weight, self.bias).bfloat16())
    rows = {v: bench.bench(v, False, TINY, torch.device("cpu"), 0, 2) for v in
            ("left-spin", "left-spin-cast-first", "left-spin-op")}
    assert built == ["decomposed", "decomposed", "op"]
    assert all(rows[v]["variant"] == v and rows[v]["step_ms_min"] <= rows[v]["step_ms"] for v in rows)
    per_run = len(left_spin_op_dtypes) // 3
    du_dtypes = [d for _, d, _ in left_spin_op_dtypes]
    assert set(du_dtypes[:per_run]) == {torch.bfloat16}          # left-spin: bf16 as is
    assert set(du_dtypes[per_run:2 * per_run]) == {torch.float32}  # cast first
    assert set(du_dtypes[2 * per_run:]) == {torch.bfloat16}      # the op form


def test_fused_variant_runs_one_projection():
    """autopoietic-fused builds its model with autopoietic_fused_projection=True (its training
    step runs q/k/v, W_g and U as one matmul); autopoietic keeps three."""
    from apt_ext.model.model import Attention

    for name, fused in (("autopoietic", False), ("autopoietic-fused", True)):
        step, model = bench.build(name, False, TINY, torch.device("cpu"))
        step()
        attns = [m for m in model.modules() if isinstance(m, Attention) and m.auto is not None]
        assert attns and all(a.auto.fuses_with(a.qkv) == fused for a in attns), name


def test_sum_op_variant_takes_the_prefix_mean_by_the_sum_op(monkeypatch):
    """autopoietic-sum-op: each step takes the prefix mean through the running-sum op (as before
    the prefix-mean op); the helper equals prefix_mean; outside its steps nothing is patched."""
    from apt_ext.model import autopoietic
    from apt_ext.model.prefix_sum import prefix_mean

    real = bench.prefix_mean_by_sum_op
    monkeypatch.setattr(bench, "prefix_mean_by_sum_op", mock.Mock(wraps=real))
    step, _ = bench.build("autopoietic-sum-op", False, TINY, torch.device("cpu"))
    step()
    assert bench.prefix_mean_by_sum_op.called
    assert autopoietic.prefix_mean is prefix_mean
    x = torch.randn(2, 7, 4)
    for got, want in zip(real(x), prefix_mean(x)):
        torch.testing.assert_close(got, want)


def test_interleaved_rounds_time_every_configuration():
    jobs = [("plain", False), ("left-spin", False)]
    rows = bench.bench_interleaved(jobs, TINY, torch.device("cpu"), warmup=1, iters=4, rounds=2)
    assert [r["variant"] for r in rows] == ["plain", "left-spin"]
    assert all(len(r["times_ms"]) == 4 and r["interleaved_rounds"] == 2 for r in rows)
    assert all(0 < r["step_ms_min"] <= r["step_ms"] for r in rows)
    for r in rows:  # each round's median of its two steps, in round order
        t = r["times_ms"]
        assert r["round_medians_ms"] == pytest.approx([(t[0] + t[1]) / 2, (t[2] + t[3]) / 2])


def test_interleaved_run_keeps_going_past_a_failing_build(monkeypatch):
    real = bench.build

    def build(name, *args, **kw):
        if name == "left-spin":
            raise RuntimeError("PassManager::run failed")
        return real(name, *args, **kw)

    monkeypatch.setattr(bench, "build", build)
    rows = bench.bench_interleaved([("plain", False), ("left-spin", False)], TINY, torch.device("cpu"),
                                   warmup=0, iters=2, rounds=2)
    assert rows[0]["variant"] == "plain" and len(rows[0]["times_ms"]) == 2
    assert rows[1] == {"variant": "left-spin", "compiled": False, "error": "RuntimeError: PassManager::run failed"}


def test_kernel_counts_see_the_op_sites_and_their_decomposed_fusion():
    """--count-kernels on the CPU: inductor's code for a compiled step has a forward and a
    backward graph; left-spin's op form calls its op at each of the layer's two sites in both (4
    more op calls than plain), while the decomposed form (the default) fuses into generated kernels
    and calls no more ops than plain."""
    counts = {}
    for v in ("plain", "left-spin", "left-spin-op"):
        row = bench.bench(v, True, TINY, torch.device("cpu"), 0, 1, count=True)
        counts[v] = row["kernel_counts"]
    assert all(len(c["graphs"]) == 2 and c["generated"] > 0 and c["extern"] > 0 for c in counts.values())
    assert counts["left-spin-op"]["ops"] == counts["plain"]["ops"] + 4
    assert counts["left-spin"]["ops"] == counts["plain"]["ops"]


def test_ratios_vs_plain_per_round():
    """A slow round (the second) slows every variant alike: the per-round ratios stay 1.1x while the
    ratio of medians over all steps does not see the rounds."""
    rows = [{"variant": "plain", "compiled": True, "step_ms": 10.0, "round_medians_ms": [10.0, 20.0, 10.0]},
            {"variant": "left-spin", "compiled": True, "step_ms": 12.0, "round_medians_ms": [11.0, 22.0, 11.0]},
            {"variant": "autopoietic", "compiled": False, "step_ms": 5.0},
            {"variant": "both", "compiled": True, "error": "RuntimeError: x"}]
    bench.add_ratios_vs_plain(rows)
    assert rows[0]["median_round_ratio_vs_plain"] == 1.0
    assert rows[1]["step_time_vs_plain"] == pytest.approx(1.2)
    assert rows[1]["round_ratios_vs_plain"] == pytest.approx([1.1, 1.1, 1.1])
    assert rows[1]["median_round_ratio_vs_plain"] == pytest.approx(1.1)
    assert "step_time_vs_plain" not in rows[2] and "step_time_vs_plain" not in rows[3]


def test_results_table_shows_the_per_round_ratios():
    rows = [{"variant": "plain", "compiled": True, "step_ms": 10.0, "tokens_per_s": 1.0, "interleaved_rounds": 3,
             "round_medians_ms": [10.0, 20.0, 10.0]},
            {"variant": "left-spin", "compiled": True, "step_ms": 12.0, "tokens_per_s": 1.0, "interleaved_rounds": 3,
             "round_medians_ms": [11.0, 22.0, 11.5]}]
    bench.add_ratios_vs_plain(rows)
    d = {"params": TINY | {"layers": 1}, "iters": 3, "warmup": 1, "rows": rows}
    text = render_results.model_throughput("model_throughput_t", d)
    assert "per round vs plain: median (range)" in text
    assert "| 1.100x (1.100x-1.150x) |" in text


def test_profile_steps_on_cpu():
    """--profile's rows: the top ops by self time per step; device busy time only where a GPU ran."""
    a = torch.randn(64, 64)
    out = bench.profile_steps(lambda: (a @ a).relu_(), torch.device("cpu"), steps=2)
    assert "device_busy_ms_per_step" not in out
    names = [k["name"] for k in out["top_kernels"]]
    assert "aten::mm" in names
    mm = out["top_kernels"][names.index("aten::mm")]
    assert mm["calls_per_step"] == 1 and mm["ms_per_step"] > 0
