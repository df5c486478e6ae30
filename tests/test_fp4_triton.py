"""Triton FP4 kernels on the CPU under TRITON_INTERPRET=1, against tests/reference/fp4.py.

The interpreter must be switched on before triton and apt_ext are imported, and other test
modules import them in this process, so every case runs in ONE child process (this file run
as a script) that reports each case's outcome as JSON; the tests below assert on it.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

FORMATS = ("nvfp4", "mxfp4", "nf4")
DTYPES = ("float32", "bfloat16", "float16")
# M <= 16 runs the split-K GEMV (fp4_gemv.py), larger M the tiled tl.dot GEMM (fp4_gemm.py).
LINEAR_M = (1, 3, 16, 17, 33)
# K = 200 is no multiple of 128 (nor of nvfp4's 16) and spans several 64-wide steps, so the
# interpreter's GEMV config splits K in two (partials, summed by the last split); K = 40 fits in
# one step (no split: the epilogue runs in the GEMV); K = 128 splits into whole steps, so the
# GEMV reads x without masks (EVEN_K).
LINEAR_K = (200, 40, 128)
# Output relative error allowed per x dtype (the reference is float64 rounded to x's dtype).
RTOL = {"float32": 1e-5, "bfloat16": 1e-2, "float16": 2e-3}


def _cases() -> list[str]:
    names = [f"dequantize-{f}-{d}" for f in FORMATS for d in DTYPES]
    names += [f"linear-{f}-{d}-m{m}-k{k}-{'bias' if m % 2 else 'nobias'}" for f in FORMATS for d in DTYPES
              for m in LINEAR_M for k in LINEAR_K]
    names += [f"linear3d-{f}" for f in FORMATS] + [f"gelu-{f}-m{m}" for f in FORMATS for m in (2, 33)]
    names += [f"deqmm-{f}-{d}" for f in FORMATS for d in DTYPES] + [f"deqmm-gelu-{f}" for f in FORMATS]
    names += [f"route-{f}-m{m}-gemv{g}" for f in FORMATS for m in (1, 3, 16) for g in (0, 16)]
    names += [f"split-counters-{kind}" for kind in ("gemv", "gemm")]
    names += ["bad-input", "one-config", "bad-deqmm-env", "bad-gemv-env", "path-candidates", "path-timed"]
    return names


# --------------------------------------------------------------------------------------
# Child process: runs every case, prints {case: null | "error message"} as JSON.
# --------------------------------------------------------------------------------------
def _child() -> dict[str, str | None]:
    import torch

    from fp4_helpers import assert_linear_close
    from reference import fp4 as ref
    from apt_ext.triton import fp4_dequantize as tdq
    from apt_ext.triton import fp4_gemm, fp4_gemv
    from apt_ext.triton import fp4_linear as tlin

    g = torch.Generator().manual_seed(int(os.environ["APT_TEST_SEED"]))  # set by interp_results

    def weight(fmt: str, k: int = 100) -> tuple:
        n = 23  # odd N; K = 100 is no multiple of any block size
        w = torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g) * 3
        w[0, :k] = 0.0                       # all-zero blocks
        w[1, 5] = -w[1].abs().max() * 1.01  # a negative block maximum
        packed, scales, ts = ref.quantize(w, fmt)
        return packed, scales, ts, ref.BLOCK_SIZES[fmt], k, n

    def rel_err(y, r) -> float:
        return float((y.double() - r.double()).norm() / r.double().norm().clamp_min(1e-30))

    results: dict[str, str | None] = {}

    def run(name, fn):
        try:
            fn()
            results[name] = None
        except Exception as exc:  # reported to the parent test
            results[name] = f"{type(exc).__name__}: {exc}"

    for fmt in FORMATS:
        packed, scales, ts, bs, k, n = weight(fmt)
        for d in DTYPES:
            dt = getattr(torch, d)

            def deq(dt=dt, fmt=fmt, packed=packed, scales=scales, ts=ts, bs=bs):
                got = tdq.fp4_dequantize(packed, scales, ts, fmt, bs, dt)
                want = ref.dequantize(packed, scales, ts, fmt, bs, dt)
                assert got.dtype == dt and got.shape == want.shape, (got.dtype, got.shape)
                assert torch.equal(got, want), f"max diff {(got.double() - want.double()).abs().max()}"

            run(f"dequantize-{fmt}-{d}", deq)
            for m in LINEAR_M:
                for k_lin in LINEAR_K:
                    def lin(dt=dt, m=m, fmt=fmt, k=k_lin):
                        wp, ws, wts, wbs, _, wn = weight(fmt, k)  # a fresh weight per case
                        bias = torch.randn(wn, generator=g) if m % 2 else None
                        x = torch.randn(m, k, generator=g).to(dt)
                        got = tlin.fp4_linear(x, wp, ws, wts, bias, fmt, wbs)
                        want = ref.linear(x, wp, ws, wts, bias, fmt, wbs)
                        assert bool(torch.isfinite(got).all()), "non-finite output"
                        # float32 math on exact weights in the interpreter: accumulation error
                        # plus one rounding to x's dtype, element by element
                        assert_linear_close(got, want, x, ref.dequantize(wp, ws, wts, fmt, wbs))

                    run(f"linear-{fmt}-{d}-m{m}-k{k_lin}-{'bias' if m % 2 else 'nobias'}", lin)

        def lin3d(fmt=fmt, packed=packed, scales=scales, ts=ts, bs=bs, k=k, n=n):
            x = torch.randn(2, 5, k, generator=g, dtype=torch.bfloat16)
            got = tlin.fp4_linear(x, packed, scales, ts, None, fmt, bs)
            want = ref.linear(x, packed, scales, ts, None, fmt, bs)
            assert got.shape == (2, 5, n), got.shape
            assert rel_err(got, want) < RTOL["bfloat16"]

        run(f"linear3d-{fmt}", lin3d)
        for m in (2, 33):
            def gelu(m=m, fmt=fmt, packed=packed, scales=scales, ts=ts, bs=bs, k=k):
                x = torch.randn(m, k, generator=g)
                bias = torch.randn(n, generator=g)
                got = tlin.fp4_linear_gelu(x, packed, scales, ts, bias, fmt, bs)
                want = torch.nn.functional.gelu(ref.linear(x.double(), packed, scales, ts, bias, fmt, bs))
                err = rel_err(got, want)
                assert err < 1e-5, f"relative error {err:.3g}"

            run(f"gelu-{fmt}-m{m}", gelu)

    # From APT_TRITON_DEQUANT_MIN_M rows: dequantised slabs (5 rows each here: 23 rows make 5
    # slabs, the last one short) times torch.mm, in x's dtype; the weight's rounding to x's
    # dtype is this path's extra error (unit roundoff times sum |x||w| per output).
    def deqmm(dt, fmt, gelu=False):
        wp, ws, wts, wbs, k, wn = weight(fmt, 72)
        x = torch.randn(40, k, generator=g).to(dt)
        bias = torch.randn(wn, generator=g)
        saved, os.environ["APT_TRITON_DEQUANT_MIN_M"] = (tlin.SCRATCH_MAX_BYTES, tlin.dequantize_into), "40"
        slabs = []
        tlin.SCRATCH_MAX_BYTES = 5 * k * 4
        tlin.dequantize_into = lambda packed, *a: (slabs.append(packed.shape[0]), saved[1](packed, *a))
        try:
            op = tlin.fp4_linear_gelu if gelu else tlin.fp4_linear
            got = op(x, wp, ws, wts, bias, fmt, wbs)
        finally:
            tlin.SCRATCH_MAX_BYTES, tlin.dequantize_into = saved
            del os.environ["APT_TRITON_DEQUANT_MIN_M"]
        assert slabs == [5, 5, 5, 5, 3], slabs  # the path was taken, in slabs of the scratch size
        want = ref.linear(x.double(), wp, ws, wts, bias, fmt, wbs)
        w = ref.dequantize(wp, ws, wts, fmt, wbs)[:, :k].double()
        mag = x.double().abs() @ w.abs().T
        u = {torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}[dt]
        bound = 2 * u * want.abs() + 2 * u * mag + 1e-6 * mag + 1e-30
        if gelu:  # GELU's slope is at most 1.13; its own float32 evaluation errs by a few ulp of its input
            pre, want = want, torch.nn.functional.gelu(want)
            bound = 1.13 * bound + 4 * u * pre.abs() + 2 * u * want.abs()
        err = (got.double() - want).abs()
        assert got.dtype == dt and got.shape == want.shape, (got.dtype, got.shape)
        assert bool((err <= bound).all()), f"max excess {(err - bound).max().item():.3g}"

    for fmt in FORMATS:
        for d in DTYPES:
            run(f"deqmm-{fmt}-{d}", lambda fmt=fmt, d=d: deqmm(getattr(torch, d), fmt))
        run(f"deqmm-gelu-{fmt}", lambda fmt=fmt: deqmm(torch.float32, fmt, gelu=True))

    def bad_env(name, value, m):
        packed, scales, ts, bs, k, _ = weight("nvfp4")
        os.environ[name] = value
        try:
            tlin.fp4_linear(torch.randn(m, k), packed, scales, ts, None, "nvfp4", bs)
        except ValueError as e:
            assert str(e).startswith(name), str(e)
        else:
            raise AssertionError(f"no ValueError for {name}={value}")
        finally:
            del os.environ[name]

    run("bad-deqmm-env", lambda: bad_env("APT_TRITON_DEQUANT_MIN_M", "8", 20))
    run("bad-gemv-env", lambda: bad_env("APT_TRITON_GEMV_MAX_M", "17", 2))

    # APT_TRITON_GEMV_MAX_M routes M <= 16 to the GEMV (16) or to the GEMM's small-M tiles (0;
    # 16 rows, K split in two): both paths at M = 1, 3 and 16 whatever the default
    def route(fmt, m, gemv_max):
        wp, ws, wts, wbs, k, wn = weight(fmt, 128)
        x = torch.randn(m, k, generator=g)
        bias = torch.randn(wn, generator=g)
        calls = []
        saved_gemv, saved_gemm = tlin.gemv, tlin.gemm
        tlin.gemv = lambda *a, **kw: (calls.append("gemv"), saved_gemv(*a, **kw))[1]
        tlin.gemm = lambda *a, **kw: (calls.append("gemm"), saved_gemm(*a, **kw))[1]
        os.environ["APT_TRITON_GEMV_MAX_M"] = str(gemv_max)
        try:
            got = tlin.fp4_linear(x, wp, ws, wts, bias, fmt, wbs)
        finally:
            tlin.gemv, tlin.gemm = saved_gemv, saved_gemm
            del os.environ["APT_TRITON_GEMV_MAX_M"]
        assert calls == ["gemv" if gemv_max else "gemm"], calls
        assert_linear_close(got, ref.linear(x, wp, ws, wts, bias, fmt, wbs), x, ref.dequantize(wp, ws, wts, fmt, wbs))

    for fmt in FORMATS:
        for m in (1, 3, 16):
            for gemv_max in (0, 16):
                run(f"route-{fmt}-m{m}-gemv{gemv_max}", lambda fmt=fmt, m=m, gm=gemv_max: route(fmt, m, gm))


    # The split launches share one counter buffer per device and stream (split_k.workspace); the
    # last split to arrive at a tile sets its counter back to zero, so launch after launch on the
    # same buffer sums (a counter left at 2 would let no split store: out keeps torch.empty's bytes)
    def split_counters(kind):
        from apt_ext.triton import split_k

        wp, ws, wts, wbs, k, wn = weight("nvfp4", 200)  # K spans two steps: the config splits it
        args = (wp, tlin.scales_as_raw(ws, "nvfp4"), wts.reshape(()).float(), None, "nvfp4", wbs, False)
        mod, m, fn = (fp4_gemv, 1, fp4_gemv.gemv) if kind == "gemv" else (fp4_gemm, 16, fp4_gemm.gemm)
        counters = split_k.workspace(2, m, wn, 1, torch.empty(m, wn))[1]
        assert split_k.workspace(2, m, wn, 1, torch.empty(m, wn))[1] is counters, "one buffer per stream"
        splits = []
        mod.workspace = lambda split, *a: (splits.append(split), split_k.workspace(split, *a))[1]
        try:
            for _ in range(3):
                x = torch.randn(m, k, generator=g)
                got = fn(x, *args)
                assert not bool(counters.any()), f"counters left at {counters[counters != 0].tolist()}"
                assert_linear_close(got, ref.linear(x, wp, ws, wts, None, "nvfp4", wbs), x,
                                    ref.dequantize(wp, ws, wts, "nvfp4", wbs))
        finally:
            mod.workspace = split_k.workspace
        assert splits == [2, 2, 2], splits

    for kind in ("gemv", "gemm"):
        run(f"split-counters-{kind}", lambda kind=kind: split_counters(kind))

    def bad():
        packed, scales, ts, bs, k, _ = weight("nvfp4")
        x = torch.randn(2, k)
        for call, exc, word in [
            (lambda: tlin.fp4_linear(x, packed, scales, ts, None, "fp5", 16), ValueError, "fmt"),
            (lambda: tlin.fp4_linear(x, packed, scales, ts, None, "nvfp4", 32), ValueError, "block_size"),
            (lambda: tlin.fp4_linear(torch.randn(2, k + 20), packed, scales, ts, None, "nvfp4", 16),
             ValueError, "x"),
            (lambda: tlin.fp4_linear(x.to(torch.int32), packed, scales, ts, None, "nvfp4", 16), TypeError, "x"),
            (lambda: tlin.fp4_linear(x, packed, scales, ts, torch.randn(3), "nvfp4", 16), ValueError, "bias"),
            (lambda: tdq.fp4_dequantize(packed, scales.float(), ts, "nvfp4", 16, torch.float32), TypeError,
             "scales"),
            (lambda: tdq.fp4_dequantize(packed, scales, ts, "nvfp4", 16, torch.int8), TypeError, "dtype"),
        ]:
            try:
                call()
            except exc as e:
                assert str(e).startswith(word), f"message {e!s} does not name {word}"
            else:
                raise AssertionError(f"no {exc.__name__} for bad {word}")

    run("bad-input", bad)

    def one_config():
        assert len(fp4_gemv.configs(4096, 4096, torch.device("cpu"))) == 1
        assert len(fp4_gemm.configs(16, 4096, 4096, torch.device("cpu"))) == 1

    run("one-config", one_config)

    # Which paths the rows of x leave to timing, and which one is taken untimed (first)
    def path_candidates():
        want = {17: ["gemm"], 64: ["gemm"], 65: ["gemm", "deqmm"], 255: ["gemm", "deqmm"],
                256: ["deqmm", "gemm"], 511: ["deqmm", "gemm"], 512: ["deqmm"], 4096: ["deqmm"]}
        got = {m: tlin.path_candidates(m) for m in want}
        assert got == want, got
        os.environ["APT_TRITON_DEQUANT_MIN_M"] = "100"
        try:  # a fixed crossover: nothing timed
            got = {m: tlin.path_candidates(m) for m in (99, 100, 300, 600)}
        finally:
            del os.environ["APT_TRITON_DEQUANT_MIN_M"]
        assert got == {99: ["gemm"], 100: ["deqmm"], 300: ["deqmm"], 600: ["deqmm"]}, got

    run("path-candidates", path_candidates)

    # Where both are candidates, the faster one (GPU time, faked here: the interpreter has none)
    # is taken, timed once per shape and cached; the result is right either way
    def path_timed():
        from apt_ext.triton import autotune

        wp, ws, wts, wbs, k, wn = weight("nvfp4", 72)
        x = torch.randn(100, k, generator=g)
        timed = []

        def fake_gpu_ms(fn, device):
            ran = []
            saved = tlin.gemm, tlin.dequant_matmul
            tlin.gemm = lambda *a, **kw: (ran.append("gemm"), saved[0](*a, **kw))[1]
            tlin.dequant_matmul = lambda *a, **kw: (ran.append("deqmm"), saved[1](*a, **kw))[1]
            try:
                fn()
            finally:
                tlin.gemm, tlin.dequant_matmul = saved
            timed.extend(ran)
            return {"gemm": 2.0, "deqmm": 1.0}[ran[0]]

        saved = tlin.INTERPRET, autotune.gpu_ms
        tlin.INTERPRET, autotune.gpu_ms = False, fake_gpu_ms
        args = (wp, tlin.scales_as_raw(ws, "nvfp4"), wts.reshape(()).float(), None, "nvfp4", wbs, False)  # as linear()
        try:
            first = tlin.path(x, args)
            again = tlin.path(x[:70], args)  # same M bucket (128)
            got = tlin.fp4_linear(x, wp, ws, wts, None, "nvfp4", wbs)
        finally:
            tlin.INTERPRET, autotune.gpu_ms = saved
            autotune.clear()
        assert (first, again) == ("deqmm", "deqmm") and timed == ["gemm", "deqmm"], (first, again, timed)
        assert_linear_close(got, ref.linear(x, wp, ws, wts, None, "nvfp4", wbs), x,
                            ref.dequantize(wp, ws, wts, "nvfp4", wbs))

    run("path-timed", path_timed)
    return results


@pytest.fixture(scope="module")
def interp_results() -> dict:
    """{case: None | error} from the child, plus "_seed": the seed of all its random inputs
    ($APT_TEST_SEED, else fresh), which the tests name when they fail."""
    seed = os.environ.get("APT_TEST_SEED") or str(random.SystemRandom().randrange(2**31))
    env = dict(os.environ, TRITON_INTERPRET="1", APT_TEST_SEED=seed)
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"interpreter run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "_seed": seed}


@pytest.mark.parametrize("case", _cases())
def test_fp4_triton_interpreted(interp_results, case):
    assert case in interp_results, f"case {case} did not run"
    assert interp_results[case] is None, \
        f"{interp_results[case]} (APT_TEST_SEED={interp_results['_seed']} replays the child's inputs)"


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1 (tests/test_fp4_triton.py does)")
    print(json.dumps(_child()))


def test_gpu_ms_refuses_a_non_bool_cold_l2():
    import torch

    from apt_ext.triton import autotune

    with pytest.raises(TypeError, match="cold_l2 must be a bool"):
        autotune.gpu_ms(lambda: None, torch.device("cpu"), cold_l2=1)
