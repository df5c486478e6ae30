"""apt::decode_attention on the CPU: the composite kernel and the Triton kernel (under the CPU
interpreter, TRITON_INTERPRET=1, in a subprocess) against tests/reference/attention.py, the
argument checks, opcheck, torch.compile. The GPU run is tests/gpu/test_decode_attention_cuda.py."""
from __future__ import annotations

import pytest
import torch
import triton  # noqa: F401  (a test dependency: fail, never skip, without it)

import apt_ext  # noqa: F401  (defines the op)
from apt_ext.attention import decode_attention
from reference import attention as ref
from triton_interpreter import interpreted, outside_interpreter, run_under_interpreter

# (B, H, KV, T, D, lengths)
CASES = [(1, 4, 1, 8, 16, [8]), (2, 8, 2, 37, 32, [1, 37]), (3, 6, 3, 130, 64, [129, 64, 2]),
         (2, 4, 4, 20, 24, [11])]


def _lengths(lengths, device="cpu"):
    return torch.tensor(lengths, dtype=torch.int64, device=device)


@outside_interpreter
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_composite_matches_reference(rng, dtype, atol, case):
    b, h, kv, t, d, lengths = case
    q, k, v = ref.make_inputs(b, h, kv, t, d, dtype, "cpu", rng)
    out = decode_attention(q, k, v, _lengths(lengths))
    assert out.dtype == dtype and out.shape == (b, h, d)
    torch.testing.assert_close(out.double(), ref.decode_attention(q, k, v, _lengths(lengths)), atol=atol, rtol=atol)


@outside_interpreter
def test_positions_at_and_after_length_are_left_out(rng):
    q, k, v = ref.make_inputs(2, 4, 2, 16, 16, torch.float32, "cpu", rng)
    length = _lengths([5, 9])
    before = decode_attention(q, k, v, length)
    k[0, :, 5:], v[0, :, 5:], k[1, :, 9:], v[1, :, 9:] = 1e3, -1e3, 1e3, -1e3
    torch.testing.assert_close(decode_attention(q, k, v, length), before)
    k[0, :, 4] = 1e3  # the last attended position counts
    assert not torch.allclose(decode_attention(q, k, v, length)[0], before[0])


@outside_interpreter
def test_matches_sdpa_with_gqa_and_scale(rng):
    q, k, v = ref.make_inputs(2, 8, 2, 24, 32, torch.float32, "cpu", rng)
    expect = torch.nn.functional.scaled_dot_product_attention(q[:, :, None], k[:, :, :17], v[:, :, :17],
                                                              enable_gqa=True, scale=0.3)[:, :, 0]
    torch.testing.assert_close(decode_attention(q, k, v, _lengths([17]), scale=0.3), expect, atol=1e-5, rtol=1e-5)


@outside_interpreter
def test_opcheck(rng):
    q, k, v = ref.make_inputs(2, 4, 2, 9, 16, torch.float32, "cpu", rng)
    torch.library.opcheck(torch.ops.apt.decode_attention.default, (q, k, v, _lengths([3, 9]), None))
    torch.library.opcheck(torch.ops.apt.decode_attention.default, (q, k, v, _lengths([4]), 0.5))


@outside_interpreter
def test_compiles_without_graph_break(rng):
    q, k, v = ref.make_inputs(1, 4, 2, 12, 16, torch.float32, "cpu", rng)
    fn = torch.compile(lambda q, k, v, n: decode_attention(q * 2, k, v, n) + 1, fullgraph=True)
    torch.testing.assert_close(fn(q, k, v, _lengths([7])), decode_attention(q * 2, k, v, _lengths([7])) + 1)


BAD = [
    (lambda q, k, v, n: (q[0], k, v, n), ValueError, "q: expected \\[B, H, D\\]"),
    (lambda q, k, v, n: (q.long(), k, v, n), TypeError, "q: expected one of"),
    (lambda q, k, v, n: (q, k.double(), v, n), ValueError, "k_cache: expected q's dtype"),
    (lambda q, k, v, n: (q, k[..., :8], v, n), ValueError, "k_cache: expected \\[B=2"),
    (lambda q, k, v, n: (q, k, v[:, :, :4], n), ValueError, "v_cache: expected k_cache's shape"),
    (lambda q, k, v, n: (q, k.transpose(2, 3), v, n), ValueError, "k_cache: expected .*"),
    (lambda q, k, v, n: (q[:, :3], k, v, n), ValueError, "q: expected a number of heads \\(3\\)"),
    (lambda q, k, v, n: (q, k, v, n.float()), ValueError, "length: expected an int32/int64"),
    (lambda q, k, v, n: (q, k, v, _lengths([1, 2, 3])), ValueError, "length: expected an int32/int64"),
    (lambda q, k, v, n: (q, k, v, _lengths([0, 3])), ValueError, "length: expected values in \\[1, 10\\]"),
    (lambda q, k, v, n: (q, k, v, _lengths([11])), ValueError, "length: expected values in \\[1, 10\\]"),
    (lambda q, k, v, n: (q, k, v, [3]), TypeError, "length: expected a torch.Tensor"),
    (lambda q, k, v, n: (q[..., :0], k[..., :0], v[..., :0], n), ValueError, "q: expected a head dimension D >= 1"),
    (lambda q, k, v, n: (q, k, v, n.to_sparse()), TypeError, "length: expected a dense \\(strided\\)"),
    (lambda q, k, v, n: (q.to_sparse(), k, v, n), TypeError, "q: expected a dense \\(strided\\)"),
]


@outside_interpreter
@pytest.mark.parametrize("make,exc,match", BAD)
def test_bad_arguments_are_named(rng, make, exc, match):
    q, k, v = ref.make_inputs(2, 4, 2, 10, 16, torch.float32, "cpu", rng)
    with pytest.raises(exc, match=match):
        decode_attention(*make(q, k, v, _lengths([3, 10])))


@outside_interpreter
@pytest.mark.parametrize("make,exc,match", BAD[:7] + BAD[9:10])
def test_the_op_itself_checks_its_arguments(rng, make, exc, match):
    """torch.ops.apt.decode_attention called directly (no wrapper) raises the same errors, eager
    and from its fake kernel (meta tensors); lengths' values are checked where they are read."""
    q, k, v = ref.make_inputs(2, 4, 2, 10, 16, torch.float32, "cpu", rng)
    with pytest.raises(exc, match=match):
        torch.ops.apt.decode_attention(*make(q, k, v, _lengths([3, 10])))
    if match.startswith("length: expected values"):
        return
    meta = [t.to("meta") if isinstance(t, torch.Tensor) else t for t in make(q, k, v, _lengths([3, 10]))]
    with pytest.raises(exc, match=match):
        torch.ops.apt.decode_attention(*meta)


@outside_interpreter
def test_bad_scale_is_named(rng):
    q, k, v = ref.make_inputs(1, 2, 1, 4, 16, torch.float32, "cpu", rng)
    with pytest.raises(TypeError, match="scale: expected a float"):
        decode_attention(q, k, v, _lengths([2]), scale="0.1")
    for bad in (float("nan"), float("inf"), float("-inf")):  # every score NaN: zeros came back
        with pytest.raises(ValueError, match="scale: expected a finite float"):
            decode_attention(q, k, v, _lengths([2]), scale=bad)
        with pytest.raises(ValueError, match="scale: expected a finite float"):
            torch.ops.apt.decode_attention(q, k, v, _lengths([2]), bad)


@outside_interpreter
def test_empty_batch(rng):
    """B = 0 (no sequence to decode): an empty result, not an error about the lengths' minimum."""
    q, k, v = ref.make_inputs(2, 4, 2, 10, 16, torch.float32, "cpu", rng)
    out = decode_attention(q[:0], k[:0], v[:0], _lengths([]))
    assert out.shape == (0, 4, 16) and out.dtype == torch.float32


@outside_interpreter
def test_triton_kernel_under_interpreter():
    run_under_interpreter(__file__)


@pytest.fixture(params=[1, 4, 16], ids=lambda n: f"{n}splits")
def few_splits(request, monkeypatch):
    """1, 4 or 16 slices per key head (several programs merge; 16 leaves some slices empty) of
    16-key steps, on the interpreter's tiny shapes; the merge loads a few slices at a time."""
    from apt_ext.triton import decode_attention as tda
    monkeypatch.setattr(tda, "BLOCK_N", 16)
    monkeypatch.setattr(tda, "MERGE_TILE", 256)
    monkeypatch.setattr(tda, "num_splits", lambda programs, capacity, device: request.param)


@interpreted
@pytest.mark.parametrize("case", CASES, ids=str)
def test_triton_matches_reference(rng, few_splits, case):
    from apt_ext.triton import decode_attention as tda
    b, h, kv, t, d, lengths = case
    q, k, v = ref.make_inputs(b, h, kv, t, d, torch.float32, "cpu", rng)
    out = tda.decode_attention(q, k, v, _lengths(lengths))
    assert out.shape == (b, h, d) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref.decode_attention(q, k, v, _lengths(lengths)), atol=1e-5, rtol=1e-5)


@interpreted
def test_triton_strided_cache_and_int32_length(rng, few_splits):
    """A cache that is a slice of a larger one (strides of the full tensor), one int32 length for all."""
    from apt_ext.triton import decode_attention as tda
    q, k, v = ref.make_inputs(2, 4, 2, 40, 16, torch.float32, "cpu", rng)
    ks, vs = k[:, :, :30], v[:, :, 5:35]
    n = torch.tensor([23], dtype=torch.int32)
    torch.testing.assert_close(tda.decode_attention(q, ks, vs, n).double(), ref.decode_attention(q, ks, vs, n),
                               atol=1e-5, rtol=1e-5)


@interpreted
def test_triton_counters_are_kept_and_left_at_zero(rng, few_splits, monkeypatch):
    """The merge counters are the stream's (apt_ext/triton/arrival_counters.py), left at zero by every
    call (no zeroing launch per call): calls in a row, then more sequences (a larger buffer), stay
    right."""
    from apt_ext.triton import arrival_counters as ac
    from apt_ext.triton import decode_attention as tda
    monkeypatch.setattr(ac, "_STREAM", {})
    monkeypatch.setattr(ac, "MIN_COUNTERS", 4)
    q, k, v = ref.make_inputs(2, 4, 2, 40, 16, torch.float32, "cpu", rng)
    made = ac.arrival_counters(1, q.device)
    for n in ([7, 40], [1, 13], [40, 2]):
        torch.testing.assert_close(tda.decode_attention(q, k, v, _lengths(n)).double(),
                                   ref.decode_attention(q, k, v, _lengths(n)), atol=1e-5, rtol=1e-5)
        assert ac.arrival_counters(1, q.device) is made and not made.any()
    b = 3  # 3 sequences x 2 key heads: more counters than the 4 made
    q, k, v = ref.make_inputs(b, 2, 2, 8, 16, torch.float32, "cpu", rng)
    torch.testing.assert_close(tda.decode_attention(q, k, v, _lengths([5])).double(),
                               ref.decode_attention(q, k, v, _lengths([5])), atol=1e-5, rtol=1e-5)
    bigger = ac.arrival_counters(1, q.device)
    assert bigger.numel() >= 2 * b and not bigger.any() and not made.any()


@interpreted
def test_triton_clamps_length_to_the_cache(rng, few_splits):
    from apt_ext.triton import decode_attention as tda
    q, k, v = ref.make_inputs(1, 2, 1, 20, 16, torch.float32, "cpu", rng)
    torch.testing.assert_close(tda.decode_attention(q, k, v, _lengths([50])).double(),
                               ref.decode_attention(q, k, v, _lengths([20])), atol=1e-5, rtol=1e-5)
    assert torch.equal(tda.decode_attention(q, k, v, _lengths([0])), torch.zeros_like(q))


@outside_interpreter
@pytest.mark.parametrize("programs,capacity,splits", [(8, 1024, 16), (8, 100, 2), (256, 1024, 1), (1, 1 << 20, 64),
                                                      (3, 8192, 32), (64, 64, 1)])
def test_num_splits_fills_the_multiprocessors(monkeypatch, programs, capacity, splits):
    """A power of two near SMs / (sequences x key heads), at most one slice per 64 cached positions
    and at most 64 (an H100's 132 multiprocessors)."""
    from apt_ext.triton import decode_attention as tda
    monkeypatch.setattr(tda, "_multiprocessors", lambda index: 132)
    assert tda.num_splits(programs, capacity, torch.device("cuda", 0)) == splits
