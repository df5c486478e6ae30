"""apt::decode_attention on a CUDA GPU: the Triton kernel (the op's CUDA kernel) against the
reference for every dtype, GQA group, head size and length (1, mid-slice, the whole cache), with
the real split count; opcheck; a CUDA graph replayed at new lengths; torch.compile; bad input.

Run: python -m pytest -q tests/gpu/test_decode_attention_cuda.py
"""
from __future__ import annotations

import pytest
import torch

from apt_ext._kernels import PYTHON_KERNELS
from apt_ext.attention import decode_attention
from reference import attention as ref

DEV = "cuda"
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}
# (B, H, KV, T, D): Llama-3-8B's heads (32 / 8, 128), multi-query, no grouping, batch 8,
# head size 64 and a size that is not a power of two, a long cache
SHAPES = [(1, 32, 8, 1024, 128), (2, 8, 1, 300, 64), (3, 4, 4, 77, 128), (8, 32, 8, 256, 128),
          (1, 12, 4, 50, 80), (1, 8, 8, 8192, 128)]


def test_the_cuda_kernel_is_triton():
    assert PYTHON_KERNELS[("decode_attention", "cuda")].startswith("Triton")


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(rng, dtype, shape):
    b, h, kv, t, d = shape
    q, k, v = ref.make_inputs(b, h, kv, t, d, dtype, DEV, rng)
    for n in sorted({1, 63, t // 2 + 1, t}):
        length = torch.randint(1, n + 1, (b,), generator=rng).to(DEV)
        length[0] = n
        out = decode_attention(q, k, v, length)
        assert out.dtype == dtype and out.shape == (b, h, d)
        expect = ref.decode_attention(q.cpu(), k.cpu(), v.cpu(), length.cpu())
        torch.testing.assert_close(out.double().cpu(), expect, atol=TOL[dtype], rtol=TOL[dtype])


def test_scale_and_one_length_for_all(rng):
    q, k, v = ref.make_inputs(4, 8, 2, 200, 64, torch.bfloat16, DEV, rng)
    n = torch.tensor([150], dtype=torch.int32, device=DEV)
    expect = ref.decode_attention(q.cpu(), k.cpu(), v.cpu(), n.cpu(), scale=0.05)
    torch.testing.assert_close(decode_attention(q, k, v, n, scale=0.05).double().cpu(), expect, atol=2e-2, rtol=2e-2)


def test_matches_sdpa_over_the_prefix(rng):
    q, k, v = ref.make_inputs(1, 32, 8, 1024, 128, torch.bfloat16, DEV, rng)
    expect = torch.nn.functional.scaled_dot_product_attention(q[:, :, None], k[:, :, :513], v[:, :, :513],
                                                              enable_gqa=True)[:, :, 0]
    out = decode_attention(q, k, v, torch.tensor([513], device=DEV))
    torch.testing.assert_close(out.float(), expect.float(), atol=2e-2, rtol=2e-2)


def test_length_is_clamped_to_the_cache(rng):
    q, k, v = ref.make_inputs(2, 4, 2, 40, 64, torch.float32, DEV, rng)
    full = decode_attention(q, k, v, torch.tensor([40, 40], device=DEV))
    torch.testing.assert_close(decode_attention(q, k, v, torch.tensor([1000, 40], device=DEV)), full)
    assert torch.equal(decode_attention(q, k, v, torch.tensor([0, 0], device=DEV)), torch.zeros_like(q))


def test_opcheck(rng):
    q, k, v = ref.make_inputs(2, 8, 2, 100, 64, torch.bfloat16, DEV, rng)
    torch.library.opcheck(torch.ops.apt.decode_attention.default, (q, k, v, torch.tensor([3, 100], device=DEV), None))


def test_cuda_graph_replays_at_new_lengths(rng):
    """Two launches in one graph, each with merge counters of its own from the device's capture
    pool (no memset in the graph; apt_ext/triton/arrival_counters.py), replayed at new lengths
    between eager calls on the same stream, leave them at zero."""
    from apt_ext.triton import arrival_counters

    q, k, v = ref.make_inputs(1, 32, 8, 512, 128, torch.bfloat16, DEV, rng)
    length = torch.tensor([10], device=DEV)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        decode_attention(q, k, v, length)  # compiles the kernel outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    pool = arrival_counters._POOL[q.device]
    taken = pool[1]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = decode_attention(q, k, v, length)
        out2 = decode_attention(q * 2, k, v, length)
    assert pool[1] == taken + 2 * 8, "each captured launch takes its 8 key heads' counters from the pool"
    for n in (10, 1, 300, 512):
        length.fill_(n)
        graph.replay()
        eager = decode_attention(q, k, v, length)
        torch.cuda.synchronize()
        expect = ref.decode_attention(q.cpu(), k.cpu(), v.cpu(), length.cpu())
        torch.testing.assert_close(out.double().cpu(), expect, atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(eager.double().cpu(), expect, atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(out2.double().cpu(), ref.decode_attention(q.cpu() * 2, k.cpu(), v.cpu(),
                                                                             length.cpu()), atol=2e-2, rtol=2e-2)
    assert not bool(pool[0][:pool[1]].any()), "the graph's counters not zero after its replays"


def test_compiled(rng):
    q, k, v = ref.make_inputs(2, 8, 2, 64, 128, torch.bfloat16, DEV, rng)
    n = torch.tensor([33, 64], device=DEV)
    fn = torch.compile(lambda q, k, v, n: decode_attention(q.float().to(q.dtype) * 2, k, v, n), fullgraph=True)
    torch.testing.assert_close(fn(q, k, v, n), decode_attention(q * 2, k, v, n))


def test_bad_arguments_are_named(rng):
    q, k, v = ref.make_inputs(1, 4, 2, 16, 64, torch.bfloat16, DEV, rng)
    with pytest.raises(ValueError, match="length: expected q's device"):
        decode_attention(q, k, v, torch.tensor([3]))
    with pytest.raises(ValueError, match="k_cache: expected q's dtype and device"):
        decode_attention(q, k.cpu(), v, torch.tensor([3], device=DEV))


def _kvcache_inputs(rng, b, h, kv, t, d, dtype, half=64):
    q, k, v = ref.make_inputs(b, h, kv, t, d, dtype, DEV, rng)
    k_new = torch.randn(b, kv, d, generator=rng).to(DEV, dtype)
    v_new = torch.randn(b, kv, d, generator=rng).to(DEV, dtype)
    angles = torch.rand(t, half, generator=rng) * 6.3
    return q, k, v, k_new, v_new, angles.cos().to(DEV), angles.sin().to(DEV)


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("shape", [(1, 32, 8, 1024, 128), (3, 4, 4, 77, 128), (2, 8, 1, 300, 64)], ids=str)
def test_kvcache_matches_reference(rng, dtype, interleaved, shape):
    """decode_attention_kvcache's Triton kernel: q and the new key rotated, the new key and value
    written at each sequence's position (the first, one inside, the last), the attention over the
    positions up to it, against the float64 reference and its updated caches."""
    from apt_ext.attention import decode_attention_kvcache

    b, h, kv, t, d = shape
    q, k, v, kn, vn, cos, sin = _kvcache_inputs(rng, b, h, kv, t, d, dtype, half=d // 2)
    pos = torch.tensor([0, t // 2 + 1, t - 1][:b], device=DEV)
    want, want_k, want_v = ref.decode_attention_kvcache(q.cpu(), k.cpu(), v.cpu(), kn.cpu(), vn.cpu(), pos.cpu(),
                                                         cos.cpu(), sin.cpu(), interleaved)
    out = decode_attention_kvcache(q, k, v, kn, vn, pos, cos, sin, rotary_interleaved=interleaved)
    torch.cuda.synchronize()
    torch.testing.assert_close(out.double().cpu(), want, atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(k.double().cpu(), want_k.double(), atol=TOL[dtype], rtol=0)
    assert torch.equal(v.cpu(), want_v)


def test_kvcache_cuda_graph_replays_at_new_positions(rng):
    """One graph of the op replayed at positions written on the device: each replay writes its row
    of the caches and attends up to it, as eager calls do."""
    from apt_ext.attention import decode_attention_kvcache

    q, k, v, kn, vn, cos, sin = _kvcache_inputs(rng, 1, 32, 8, 512, 128, torch.bfloat16)
    k_eager, v_eager = k.clone(), v.clone()
    pos = torch.tensor([3], device=DEV)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        decode_attention_kvcache(q, k.clone(), v.clone(), kn, vn, pos, cos, sin)  # compiles outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = decode_attention_kvcache(q, k, v, kn, vn, pos, cos, sin)
    for p in (3, 0, 200, 511):
        pos.fill_(p)
        kn.normal_()
        vn.normal_()
        graph.replay()
        eager = decode_attention_kvcache(q, k_eager, v_eager, kn, vn, pos, cos, sin)
        torch.cuda.synchronize()
        torch.testing.assert_close(out, eager, atol=0, rtol=0)
        assert torch.equal(k, k_eager) and torch.equal(v, v_eager)


def test_kvcache_compiled_in_place(rng):
    from apt_ext.attention import decode_attention_kvcache

    q, k, v, kn, vn, cos, sin = _kvcache_inputs(rng, 2, 32, 8, 256, 128, torch.bfloat16)
    k2, v2 = k.clone(), v.clone()
    pos = torch.tensor([17, 255], device=DEV)
    fn = torch.compile(lambda q, k, v, kn, vn, p: decode_attention_kvcache(q * 2, k, v, kn, vn, p, cos, sin,
                                                                           rotary_interleaved=True), fullgraph=True)
    torch.testing.assert_close(fn(q, k, v, kn, vn, pos),
                               decode_attention_kvcache(q * 2, k2, v2, kn, vn, pos, cos, sin, rotary_interleaved=True))
    assert torch.equal(k, k2) and torch.equal(v, v2)
