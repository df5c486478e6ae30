"""apt::decode_attention_kvcache on the CPU: the composite kernel and the Triton kernel (under the CPU
interpreter, TRITON_INTERPRET=1, in a subprocess) against tests/reference/attention.py (rotary
embedding as complex products in float64), the caches updated in place, the argument checks,
opcheck, torch.compile (the caches mutated in place, not copied). The GPU run is
tests/gpu/test_decode_attention_cuda.py."""
from __future__ import annotations

import pytest
import torch
import triton  # noqa: F401  (a test dependency: fail, never skip, without it)

import apt_ext  # noqa: F401  (defines the op)
from apt_ext.attention import decode_attention_kvcache
from reference import attention as ref
from triton_interpreter import interpreted, outside_interpreter, run_under_interpreter

# (B, H, KV, T, D, positions, rotary half-width R / 2 or 0)
CASES = [(1, 4, 1, 8, 16, [7], 8), (2, 8, 2, 37, 32, [0, 36], 16), (3, 6, 3, 70, 64, [69, 30, 1], 16),
         (2, 4, 4, 20, 24, [11], 0)]


def _inputs(case, dtype, rng, device="cpu"):
    b, h, kv, t, d, positions, half = case
    q, k, v = ref.make_inputs(b, h, kv, t, d, dtype, device, rng)
    k_new = torch.randn(b, kv, d, generator=rng).to(device, dtype)
    v_new = torch.randn(b, kv, d, generator=rng).to(device, dtype)
    angles = torch.rand(t, max(half, 1), generator=rng) * 6.3
    cos, sin = (angles.cos().to(device), angles.sin().to(device)) if half else (None, None)
    return q, k, v, k_new, v_new, torch.tensor(positions, device=device), cos, sin


def _check(fn, case, dtype, interleaved, rng, atol):
    q, k, v, kn, vn, pos, cos, sin = _inputs(case, dtype, rng)
    want, want_k, want_v = ref.decode_attention_kvcache(q, k, v, kn, vn, pos, cos, sin, interleaved)
    out = fn(q, k, v, kn, vn, pos, cos, sin, interleaved)
    assert out.shape == q.shape and out.dtype == dtype
    torch.testing.assert_close(out.double(), want, atol=atol, rtol=atol)
    torch.testing.assert_close(k.double(), want_k.double(), atol=atol, rtol=0)  # written in place
    torch.testing.assert_close(v, want_v, atol=0, rtol=0)


@outside_interpreter
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_composite_matches_reference(rng, case, dtype, atol, interleaved):
    _check(decode_attention_kvcache, case, dtype, interleaved, rng, atol)


@outside_interpreter
def test_the_new_token_is_attended_and_later_rows_are_not(rng):
    """Row p is the new key and value (a cache row past p, however large, is left out)."""
    q, k, v, kn, vn, pos, _, _ = _inputs((1, 2, 1, 6, 16, [2], 0), torch.float32, rng)
    k[0, 0, 3:] = 1e3
    kn[0, 0] = q[0, 0] * 50  # the new key dominates head 0's softmax
    out = decode_attention_kvcache(q, k, v, kn, vn, pos)
    torch.testing.assert_close(out[0, 0], vn[0, 0], atol=1e-4, rtol=1e-4)


@outside_interpreter
def test_opcheck(rng):
    q, k, v, kn, vn, pos, cos, sin = _inputs((2, 4, 2, 9, 16, [3, 8], 4), torch.float32, rng)
    torch.library.opcheck(torch.ops.apt.decode_attention_kvcache.default, (q, k, v, kn, vn, pos, cos, sin, True, None))
    torch.library.opcheck(torch.ops.apt.decode_attention_kvcache.default,
                          (q, k, v, kn, vn, pos[:1], None, None, False, 0.5))


@outside_interpreter
def test_compiled_updates_the_caches_in_place(rng):
    """torch.compile keeps the op's in-place cache writes in place: the generated code copies
    neither cache (a functionalised copy of a decoder's cache per layer would cost more than the
    attention), and the results equal eager ones."""
    from torch._inductor.utils import run_and_get_code

    q, k, v, kn, vn, pos, cos, sin = _inputs((2, 4, 2, 12, 16, [5, 11], 8), torch.float32, rng)
    k2, v2 = k.clone(), v.clone()
    fn = torch.compile(lambda q, k, v, kn, vn, p: decode_attention_kvcache(q * 2, k, v, kn, vn, p, cos, sin) + 1,
                       fullgraph=True)
    out, code = run_and_get_code(fn, q, k, v, kn, vn, pos)
    torch.testing.assert_close(out, decode_attention_kvcache(q * 2, k2, v2, kn, vn, pos, cos, sin) + 1)
    assert torch.equal(k, k2) and torch.equal(v, v2)
    text = "\n".join(code)
    assert "decode_attention_kvcache" in text and ".copy_(" not in text and "clone" not in text, text


BAD = [
    (lambda a: {**a, "k_new": a["k_new"][:, :1]}, ValueError, "k_new: expected \\[B=2, KV=2, D=16\\]"),
    (lambda a: {**a, "v_new": a["v_new"].double()}, ValueError, "v_new: expected q's dtype"),
    (lambda a: {**a, "k_new": a["k_new"].transpose(1, 2).contiguous().transpose(1, 2)}, ValueError,
     "k_new: expected its last dimension contiguous"),
    (lambda a: {**a, "v_new": [1.0]}, TypeError, "v_new: expected a torch.Tensor"),
    (lambda a: {**a, "cache_seqlens": a["cache_seqlens"].float()}, ValueError, "cache_seqlens: expected an int32/int64"),
    (lambda a: {**a, "cache_seqlens": torch.tensor([3, 10])}, ValueError, "cache_seqlens: expected values in \\[0, 9\\]"),
    (lambda a: {**a, "cache_seqlens": torch.tensor([-1, 2])}, ValueError, "cache_seqlens: expected values in"),
    (lambda a: {**a, "rotary_sin": None}, ValueError, "rotary_cos, rotary_sin: expected both or neither"),
    (lambda a: {**a, "rotary_cos": a["rotary_cos"][:5], "rotary_sin": a["rotary_sin"][:5]}, ValueError,
     "rotary_cos: expected \\[>= T=10"),
    (lambda a: {**a, "rotary_cos": a["rotary_cos"].repeat(1, 3), "rotary_sin": a["rotary_sin"].repeat(1, 3)},
     ValueError, "rotary_cos: expected .*R <= D=16"),
    (lambda a: {**a, "rotary_cos": a["rotary_cos"].double()}, ValueError, "rotary_cos: expected"),
    (lambda a: {**a, "rotary_interleaved": 1}, TypeError, "rotary_interleaved: expected a bool"),
    (lambda a: {**a, "v_cache": a["k_cache"]}, ValueError, "v_cache: expected a tensor apart from k_cache"),
    (lambda a: {**a, "v_cache": a["k_cache"].view(a["k_cache"].shape)}, ValueError,
     "v_cache: expected a tensor apart from k_cache"),
    (lambda a: {**a, "k_cache": a["k_cache"][:1].expand(2, -1, -1, -1)}, ValueError,
     "k_cache: expected no broadcast \\(stride 0\\) dimension"),
    (lambda a: {**a, "v_cache": a["v_cache"][:, :1].expand(-1, 2, -1, -1)}, ValueError,
     "v_cache: expected no broadcast \\(stride 0\\) dimension"),
    (lambda a: {**a, "scale": float("nan")}, ValueError, "scale: expected a finite float"),
    (lambda a: {**a, "rotary_sin": a["rotary_sin"].to_sparse()}, TypeError, "rotary_sin: expected a dense"),
]


@outside_interpreter
@pytest.mark.parametrize("make,exc,match", BAD)
def test_bad_arguments_are_named(rng, make, exc, match):
    q, k, v, kn, vn, pos, cos, sin = _inputs((2, 4, 2, 10, 16, [3, 9], 4), torch.float32, rng)
    args = {"q": q, "k_cache": k, "v_cache": v, "k_new": kn, "v_new": vn, "cache_seqlens": pos,
            "rotary_cos": cos, "rotary_sin": sin}
    with pytest.raises(exc, match=match):
        decode_attention_kvcache(**make(args))


@outside_interpreter
def test_caches_in_one_buffer_are_taken(rng):
    """Keys and values as two halves of one buffer (apart in memory, or interleaved per position)
    are two caches, not one: only a cache that shares k_cache's memory is refused."""
    q, k, v, kn, vn, pos, cos, sin = _inputs((2, 4, 2, 10, 16, [3, 9], 4), torch.float32, rng)
    want = decode_attention_kvcache(q, k.clone(), v.clone(), kn, vn, pos, cos, sin)
    kv = torch.stack((k, v))  # [2, B, KV, T, D]: apart in memory
    torch.testing.assert_close(decode_attention_kvcache(q, kv[0], kv[1], kn, vn, pos, cos, sin), want)
    kv = torch.stack((k, v), 3)  # [B, KV, T, 2, D]: interleaved per position
    torch.testing.assert_close(decode_attention_kvcache(q, kv[:, :, :, 0], kv[:, :, :, 1], kn, vn, pos, cos, sin),
                               want)


@outside_interpreter
def test_empty_batch(rng):
    """B = 0: an empty result and untouched (empty) caches, not an error about the positions' minimum."""
    q, k, v, kn, vn, pos, _, _ = _inputs((2, 4, 2, 10, 16, [3, 9], 0), torch.float32, rng)
    out = decode_attention_kvcache(q[:0], k[:0], v[:0], kn[:0], vn[:0], pos[:0])
    assert out.shape == (0, 4, 16)


@outside_interpreter
def test_triton_kernel_under_interpreter():
    run_under_interpreter(__file__)


@pytest.fixture(params=[1, 4], ids=lambda n: f"{n}splits")
def few_splits(request, monkeypatch):
    """1 or 4 slices per key head (the new row in any of them) of 16-key steps."""
    from apt_ext.triton import decode_attention as tda
    monkeypatch.setattr(tda, "BLOCK_N", 16)
    monkeypatch.setattr(tda, "MERGE_TILE", 256)
    monkeypatch.setattr(tda, "num_splits", lambda programs, capacity, device: request.param)


@interpreted
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_triton_matches_reference(rng, few_splits, case, interleaved):
    from apt_ext.triton import decode_attention as tda
    _check(tda.decode_attention_kvcache, case, torch.float32, interleaved, rng, 1e-5)


@interpreted
def test_triton_clamps_the_position_to_the_cache(rng, few_splits):
    """A position past the cache writes and attends its last row, as the composite does."""
    from apt_ext.attention._ops import decode_attention_kvcache_composite
    from apt_ext.triton import decode_attention as tda
    q, k, v, kn, vn, _, cos, sin = _inputs((1, 2, 1, 20, 16, [0], 4), torch.float32, rng)
    k2, v2 = k.clone(), v.clone()
    pos = torch.tensor([50])
    torch.testing.assert_close(tda.decode_attention_kvcache(q, k, v, kn, vn, pos, cos, sin),
                               decode_attention_kvcache_composite(q, k2, v2, kn, vn, pos, cos, sin), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k, k2, atol=1e-6, rtol=0)
