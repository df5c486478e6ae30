"""benchmarks/model_throughput.py's A/B variants on the CPU at a tiny size: left-spin-cast-first
casts the branch before the op, left-spin-decomposed builds its sites with the decomposed
compiled form, autopoietic-traced-sum compiles the blocked running sum instead of its op, and
each row records its fastest step (timings belong to the benchmark)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import model_throughput as bench  # noqa: E402

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
            ("left-spin", "left-spin-cast-first", "left-spin-decomposed")}
    assert built == ["op", "op", "decomposed"]
    assert all(rows[v]["variant"] == v and rows[v]["step_ms_min"] <= rows[v]["step_ms"] for v in rows)
    per_run = len(left_spin_op_dtypes) // 3
    du_dtypes = [d for _, d, _ in left_spin_op_dtypes]
    assert set(du_dtypes[:per_run]) == {torch.bfloat16}          # left-spin: bf16 as is
    assert set(du_dtypes[per_run:2 * per_run]) == {torch.float32}  # cast first
    assert set(du_dtypes[2 * per_run:]) == {torch.bfloat16}      # eager decomposed runs the op


def test_traced_sum_variant_compiles_the_blocked_sum(monkeypatch):
    """autopoietic-traced-sum: while compiling, the prefix mean's running sum is blocked_cumsum
    (the op is not called); outside the variant the op is restored."""
    from apt_ext.model import prefix_sum as ps

    seen = []
    real_bench = bench.bench

    def fake_bench(name, *args, **kw):  # the inner call made under the patch
        if name == "autopoietic":
            seen.append(ps._prefix_sum_op is ps.blocked_cumsum)
            return {"variant": name}
        return real_bench(name, *args, **kw)

    monkeypatch.setattr(bench, "bench", fake_bench)
    row = real_bench("autopoietic-traced-sum", True, TINY, torch.device("cpu"), 0, 1)
    assert seen == [True] and row["variant"] == "autopoietic-traced-sum"
    assert ps._prefix_sum_op is not ps.blocked_cumsum
