"""benchmarks/e2e_decoder.py on the CPU at a tiny size: both models decode a step with the static
KV cache, the nvfp4 model stays close to the float one, its weights take about 4.5 / 32 of the
float32 bytes, and bad arguments are refused."""
from __future__ import annotations

import copy
import json
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import e2e_decoder  # noqa: E402


def test_e2e_decoder_cpu(tmp_path, one_thread):
    out = tmp_path / "dec.json"
    assert e2e_decoder.main(["--cpu", "--batches", "1,3", "--iters", "2", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    for b in ("1", "3"):
        runs = d["runs"][b]
        assert runs["float32"]["tokens_per_s"] > 0 and runs["nvfp4"]["tokens_per_s"] > 0
        assert runs["nvfp4"]["cosine_vs_float32"] > 0.99
        assert 0.01 < runs["nvfp4"]["update_rel_error_vs_float32"] < 0.3  # 4-bit error, not zero, not noise
    assert 0.13 < d["nvfp4_weight_ratio"] < 0.15  # 4.5 bits of 32


@pytest.mark.parametrize("swiglu", ["fused", "composite"])
def test_e2e_decoder_cpu_fused_projections(swiglu, tmp_path, one_thread):
    """--fused with either SwiGLU form: the nvfp4 model stays as close to the float one."""
    out = tmp_path / "dec.json"
    assert e2e_decoder.main(["--cpu", "--fused", "--swiglu", swiglu, "--batches", "1", "--iters", "1",
                             "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["swiglu"] == swiglu and d["runs"]["1"]["nvfp4"]["cosine_vs_float32"] > 0.99


def test_static_kv_step_matches_full_attention():
    """One decode step at position p with the static cache equals causal attention over the
    cache's first p + 1 positions computed directly (the mask and the in-place write are right)."""
    torch.manual_seed(0)
    s = e2e_decoder.Shape(layers=1, d=64, d_ff=128, heads=4, kv_heads=2, context=16)
    model = e2e_decoder.build(s, torch.device("cpu"), torch.float32)
    kv = e2e_decoder.StaticKV(2, s, torch.device("cpu"), torch.float32, torch.Generator().manual_seed(1))
    x = torch.randn(2, 1, s.d)
    p = 9
    with torch.no_grad():
        got = model(x, [kv], torch.tensor([p]))
        layer, hd = model.layers[0], s.d // s.heads
        h = layer.n1(x)
        cos, sin = model.cos[p], model.sin[p]
        q = e2e_decoder.rotate(layer.q(h).view(2, 1, s.heads, hd).transpose(1, 2), cos, sin)
        keys, values = kv.k[:, :, :p + 1], kv.v[:, :, :p + 1]  # position p written by the step above
        rep = s.heads // s.kv_heads
        att = torch.softmax(q @ keys.repeat_interleave(rep, 1).transpose(-1, -2) / hd ** 0.5, -1)
        y = (att @ values.repeat_interleave(rep, 1)).transpose(1, 2).reshape(2, 1, -1)
        x1 = x + layer.o(y)
        h2 = layer.n2(x1)
        want = x1 + layer.down(torch.nn.functional.silu(layer.gate(h2)) * layer.up(h2))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_bad_batches_are_refused():
    with pytest.raises(SystemExit):
        e2e_decoder.main(["--cpu", "--batches", "0"])


def test_e2e_decoder_cpu_compiled(tmp_path, one_thread):
    """--compile: each step also runs compiled (after the eager calls), its time is recorded and
    its output matches the eager step's."""
    out = tmp_path / "dec.json"
    assert e2e_decoder.main(["--cpu", "--compile", "--batches", "2", "--iters", "2", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["compiled"] is True
    for name in ("float32", "nvfp4"):
        r = d["runs"]["2"][name]
        assert r["compiled"] is True and r["compiled_s"] > 0
        assert r["tokens_per_s"] == pytest.approx(2 / r["compiled_s"])
        assert r["compiled_rel_diff_vs_eager"] < 1e-4


def test_fused_projections_compute_the_same_step():
    """--fused: q/k/v and gate/up as one Linear each, holding the unfused layer's weights stacked,
    give the same step."""
    s = e2e_decoder.Shape(layers=2, d=64, d_ff=128, heads=4, kv_heads=2, context=16)
    plain = e2e_decoder.build(s, torch.device("cpu"), torch.float32)
    fused = e2e_decoder.build(s, torch.device("cpu"), torch.float32, fused=True)
    with torch.no_grad():
        for a, b in zip(plain.layers, fused.layers):
            b.qkv.weight.copy_(torch.cat([a.q.weight, a.k.weight, a.v.weight]))
            b.gate_up.weight.copy_(torch.cat([a.gate.weight, a.up.weight]))
            for name in ("n1", "n2", "o", "down"):
                getattr(b, name).load_state_dict(getattr(a, name).state_dict())
        x = torch.randn(3, 1, s.d)
        caches = [[e2e_decoder.StaticKV(3, s, torch.device("cpu"), torch.float32, torch.Generator().manual_seed(i))
                   for i in range(s.layers)] for _ in range(2)]
        got = fused(x, caches[1], torch.tensor([5]))
        want = plain(x, caches[0], torch.tensor([5]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(caches[0], caches[1]):  # the step wrote the same keys and values
        torch.testing.assert_close(a.k, b.k)
        torch.testing.assert_close(a.v, b.v)


def test_e2e_decoder_cpu_fused(tmp_path, one_thread):
    out = tmp_path / "dec.json"
    assert e2e_decoder.main(["--cpu", "--fused", "--batches", "1", "--iters", "2", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["fused_projections"] is True and d["runs"]["1"]["nvfp4"]["cosine_vs_float32"] > 0.99


def test_e2e_decoder_cpu_one_copy(tmp_path, one_thread):
    """--one-copy: every FP4Linear releases its canonical tensors (on the CPU its calls rebuild them,
    or run the CPU tiled copy on AVX-512); the held canonical bytes are then the tensor scales
    alone and the output is unchanged."""
    out = tmp_path / "dec.json"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "FP4Linear: this call does not run on the tiled copy", RuntimeWarning)
        assert e2e_decoder.main(["--cpu", "--one-copy", "--batches", "1", "--iters", "2", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["one_copy"] is True and d["weight_bytes"]["nvfp4"] < 100
    assert d["runs"]["1"]["nvfp4"]["cosine_vs_float32"] > 0.99


@pytest.mark.parametrize("attention, context, pos", [("matmul", 16, 6), ("flex", 300, 6), ("flex", 300, 200),
                                                     ("flex", 300, 299), ("apt", 16, 0), ("apt", 300, 200),
                                                     ("apt_kvcache", 16, 0), ("apt_kvcache", 300, 299)])
def test_other_attentions_compute_the_same_step(attention, context, pos):
    """--attention matmul (grouped_attention: two batched matmuls, float32 softmax), flex
    (flex_attention over decode_block_mask's blocks: the first, the first two of three, all three
    at these positions), apt (apt_ext.attention.decode_attention over positions 0..pos) and
    apt_kvcache (decode_attention_kvcache: rotary embedding and cache write in the op) give the
    step F.scaled_dot_product_attention gives over the whole masked cache, and the same caches
    after it, on the same weights and cache (random keys and values past ``pos`` too); an unknown
    name is refused."""
    s = e2e_decoder.Shape(layers=2, d=64, d_ff=128, heads=4, kv_heads=2, context=context)
    sdpa = e2e_decoder.build(s, torch.device("cpu"), torch.float32)
    other = e2e_decoder.build(s, torch.device("cpu"), torch.float32, attention=attention)
    other.load_state_dict(sdpa.state_dict())
    x = torch.randn(3, 1, s.d)
    caches = [[e2e_decoder.StaticKV(3, s, torch.device("cpu"), torch.float32, torch.Generator().manual_seed(i))
               for i in range(s.layers)] for _ in range(2)]
    with torch.no_grad():
        want = sdpa(x, caches[0], torch.tensor([pos]))
        got = other(x, caches[1], torch.tensor([pos]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(caches[0], caches[1]):
        torch.testing.assert_close((b.k, b.v), (a.k, a.v), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="attention"):
        e2e_decoder.Layer(s, attention="flash")


def test_decode_block_mask_compiled_flex_attention_matches_sdpa():
    """Compiled flex_attention visits only decode_block_mask's blocks (eager flex ignores the
    block sparsity, so the layer test above cannot see a wrong block count): at positions in the
    first, middle and last of three 128-key blocks it equals SDPA over the whole masked cache."""
    q, k, v = torch.randn(2, 4, 1, 16), torch.randn(2, 2, 300, 16), torch.randn(2, 2, 300, 16)
    attend = torch.compile(lambda q, k, v, pos: e2e_decoder.flex_attention(
        q, k, v, block_mask=e2e_decoder.decode_block_mask(pos, 300), enable_gqa=True), dynamic=False)
    for pos in (6, 200, 299):
        p = torch.tensor([pos])
        assert e2e_decoder.decode_block_mask(p, 300).kv_num_blocks.item() == pos // 128 + 1
        mask = (torch.arange(300) <= pos).view(1, 1, 1, -1)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        torch.testing.assert_close(attend(q, k, v, p), want, rtol=1e-5, atol=1e-5)


def test_e2e_decoder_cpu_matmul_attention(tmp_path, one_thread):
    out = tmp_path / "dec.json"
    assert e2e_decoder.main(["--cpu", "--attention", "matmul", "--batches", "1", "--iters", "2",
                             "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["attention"] == "matmul" and d["runs"]["1"]["nvfp4"]["cosine_vs_float32"] > 0.99


def test_e2e_decoder_cpu_fuse_norms(tmp_path, one_thread):
    """--fused --fuse-norms: the nvfp4 model's norms folded into its projections (on the CPU the
    helpers run their composite) stays as close to the float one; --fuse-norms alone is refused."""
    out = tmp_path / "dec.json"
    assert e2e_decoder.main(["--cpu", "--fused", "--fuse-norms", "--batches", "1", "--iters", "1",
                             "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["fused_norms"] is True and d["runs"]["1"]["nvfp4"]["cosine_vs_float32"] > 0.99
    with pytest.raises(SystemExit):
        e2e_decoder.main(["--cpu", "--fuse-norms"])
    assert e2e_decoder.main(["--cpu", "--fused", "--fuse-norms", "--separate-mlp-norm", "--batches", "1",
                             "--iters", "1", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["separate_mlp_norm"] is True and d["runs"]["1"]["nvfp4"]["cosine_vs_float32"] > 0.99
    with pytest.raises(SystemExit):  # the MLP's norm is separate only from a fused one
        e2e_decoder.main(["--cpu", "--fused", "--separate-mlp-norm"])
    assert e2e_decoder.main(["--cpu", "--fused", "--fuse-norms", "--norm-handoff", "--batches", "1",
                             "--iters", "1", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["norm_handoff"] is True and d["runs"]["1"]["nvfp4"]["cosine_vs_float32"] > 0.99
    for bad in (["--fused", "--norm-handoff"], ["--fused", "--fuse-norms", "--separate-mlp-norm", "--norm-handoff"]):
        with pytest.raises(SystemExit):
            e2e_decoder.main(["--cpu", *bad])


def test_fuse_norms_compute_the_same_step():
    """Layers through apt_ext.nn's norm-fusion helpers, with the norms' (random) weights folded into
    q/k/v and gate/up, give the plain fused layers' step."""
    from apt_ext.nn import fold_rms_norm_

    s = e2e_decoder.Shape(layers=2, d=64, d_ff=128, heads=4, kv_heads=2, context=16)
    plain = e2e_decoder.build(s, torch.device("cpu"), torch.float32, fused=True)
    with torch.no_grad():
        for layer in plain.layers:
            layer.n1.weight.uniform_(0.5, 1.5)
            layer.n2.weight.uniform_(0.5, 1.5)
    folded = e2e_decoder.build(s, torch.device("cpu"), torch.float32, fused=True, fuse_norms=True)
    folded.load_state_dict(plain.state_dict())
    for layer in folded.layers:
        fold_rms_norm_(layer.n1, layer.qkv)
        fold_rms_norm_(layer.n2, layer.gate_up)
    with torch.no_grad():
        x = torch.randn(3, 1, s.d)
        caches = [[e2e_decoder.StaticKV(3, s, torch.device("cpu"), torch.float32, torch.Generator().manual_seed(i))
                   for i in range(s.layers)] for _ in range(2)]
        torch.testing.assert_close(folded(x, caches[1], torch.tensor([5])), plain(x, caches[0], torch.tensor([5])),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="fuse_norms"):
        e2e_decoder.Layer(s, fused=False, fuse_norms=True)


@pytest.mark.parametrize("swiglu", e2e_decoder.SWIGLUS)
def test_separate_mlp_norm_computes_the_same_step(swiglu):
    """fuse_norms with separate_mlp_norm (only n1 folded into q/k/v; the MLP's norm run on its own,
    gate/up a plain projection) gives the plain fused layers' step; it needs fuse_norms."""
    from apt_ext.nn import fold_rms_norm_

    s = e2e_decoder.Shape(layers=2, d=64, d_ff=128, heads=4, kv_heads=2, context=16)
    plain = e2e_decoder.build(s, torch.device("cpu"), torch.float32, fused=True, swiglu=swiglu)
    with torch.no_grad():
        for layer in plain.layers:
            layer.n1.weight.uniform_(0.5, 1.5)
            layer.n2.weight.uniform_(0.5, 1.5)
    separate = e2e_decoder.build(s, torch.device("cpu"), torch.float32, fused=True, swiglu=swiglu,
                                 fuse_norms=True, separate_mlp_norm=True)
    separate.load_state_dict(plain.state_dict())
    for layer in separate.layers:
        fold_rms_norm_(layer.n1, layer.qkv)
    with torch.no_grad():
        x = torch.randn(3, 1, s.d)
        caches = [[e2e_decoder.StaticKV(3, s, torch.device("cpu"), torch.float32, torch.Generator().manual_seed(i))
                   for i in range(s.layers)] for _ in range(2)]
        torch.testing.assert_close(separate(x, caches[1], torch.tensor([5])),
                                   plain(x, caches[0], torch.tensor([5])), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="separate_mlp_norm: needs fuse_norms"):
        e2e_decoder.Layer(s, fused=True, separate_mlp_norm=True)


@pytest.mark.parametrize("swiglu", e2e_decoder.SWIGLUS)
def test_norm_handoff_computes_the_same_step(swiglu):
    """An nvfp4 stack with folded norms whose norms take their sums of squares from the o / down
    projections before them (set_norm_handoff: FP4Linear's rms_sumsq, on the CPU its composite)
    gives the same step as the one whose norms sum x's squares themselves; it needs fuse_norms
    without separate_mlp_norm."""
    import apt_ext
    from apt_ext.nn import fold_rms_norm_

    s = e2e_decoder.Shape(layers=2, d=64, d_ff=128, heads=4, kv_heads=2, context=16)
    folded = e2e_decoder.build(s, torch.device("cpu"), torch.float32, fused=True, swiglu=swiglu, fuse_norms=True)
    with torch.no_grad():
        for layer in folded.layers:
            layer.n1.weight.uniform_(0.5, 1.5)
            layer.n2.weight.uniform_(0.5, 1.5)
            fold_rms_norm_(layer.n1, layer.qkv)
            fold_rms_norm_(layer.n2, layer.gate_up)
    fp4 = apt_ext.quantize_(folded, fmt="nvfp4")
    handoff = copy.deepcopy(fp4).set_norm_handoff()
    assert all(layer.norm_handoff for layer in handoff.layers) and not fp4.layers[0].norm_handoff
    with torch.no_grad():
        x = torch.randn(3, 1, s.d)
        caches = [[e2e_decoder.StaticKV(3, s, torch.device("cpu"), torch.float32, torch.Generator().manual_seed(i))
                   for i in range(s.layers)] for _ in range(2)]
        want = fp4(x, caches[0], torch.tensor([5]))
        torch.testing.assert_close(handoff(x, caches[1], torch.tensor([5])), want, rtol=1e-4, atol=1e-4)
    for kwargs in ({}, {"fuse_norms": True, "separate_mlp_norm": True}):
        with pytest.raises(ValueError, match="norm_handoff needs fuse_norms"):
            e2e_decoder.build(s, torch.device("cpu"), torch.float32, fused=True, **kwargs).set_norm_handoff()


def test_kernels_by_grid_splits_a_kernel_by_launch_shape_and_order():
    """The profile's GEMV rows: over 2 profiled calls of a 2-layer step, one kernel launched with
    grid 96 twice a layer (o, then down: slots 0 and 1 by their order in the layer) and with grid
    448 once a layer gives three rows (time and launches per call, median time a launch); other
    kernels and CPU events are left out; the events need not come in time order."""
    gemv = "void gemv_tiled_kernel<0>(Args)"

    def launch(ts, dur, grid):
        return {"cat": "kernel", "name": gemv, "ts": ts, "dur": dur, "args": {"grid": [grid, 1, 1], "block": [256, 1, 1]}}
    events = []
    for call in range(2):
        for layer in range(2):
            t = 100.0 * call + 10.0 * layer
            events += [launch(t + 2, 4.0 + call, 96), launch(t + 1, 20.0, 448), launch(t + 3, 9.0 + layer, 96)]
    events += [{"cat": "kernel", "name": "sdpa_kernel", "ts": 5.0, "dur": 50.0, "args": {"grid": [8, 1, 1]}},
               {"cat": "cpu_op", "name": "gemv (host)", "ts": 6.0, "dur": 99.0}]
    rows = e2e_decoder.kernels_by_grid({"traceEvents": events[::-1]}, calls=2, match="gemv", layers=2)
    assert [(r["grid"][0], r["slot"]) for r in rows] == [(448, 0), (96, 1), (96, 0)]
    assert rows[0] == {"name": gemv, "grid": [448, 1, 1], "block": [256, 1, 1], "slot": 0, "us_per_call": 40.0,
                       "launches_per_call": 2.0, "us_per_launch": 20.0}
    assert rows[1]["us_per_call"] == 19.0 and rows[1]["us_per_launch"] == 9.5  # down: 9, 10 per call
    assert rows[2]["us_per_call"] == 9.0 and rows[2]["us_per_launch"] == 4.5 and rows[2]["launches_per_call"] == 2.0
    one_layer = e2e_decoder.kernels_by_grid({"traceEvents": events}, calls=2, match="gemv", layers=1)
    assert sorted((r["grid"][0], r["slot"]) for r in one_layer) == [(96, 0), (96, 1), (96, 2), (96, 3), (448, 0), (448, 1)]
    with pytest.raises(ValueError, match="layers"):
        e2e_decoder.kernels_by_grid({"traceEvents": events}, calls=2, match="gemv", layers=0)
    with pytest.raises(ValueError, match="calls"):
        e2e_decoder.kernels_by_grid({"traceEvents": events}, calls=0, match="gemv")
