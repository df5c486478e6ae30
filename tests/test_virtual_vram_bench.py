"""benchmarks/virtual_vram.py on the CPU at a tiny size: every path decodes, paging moves the
weights bit for bit (logits equal the resident model's), so does accelerate's cpu_offload (when
installed), nvfp4 stays close (and matches the model holding its dequantized weights), and the
SSD level takes part."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import virtual_vram  # noqa: E402


def test_virtual_vram_quick_cpu(tmp_path, one_thread):
    out = tmp_path / "vv.json"
    assert virtual_vram.main(["--cpu", "--quick", "--batches", "2", "--new-tokens", "3", "--out", str(out),
                              "--ssd-dir", str(tmp_path)]) == 0
    runs = json.loads(out.read_text())["runs"]["2"]
    assert runs["resident-float32"]["tokens_per_s"] > 0
    paged = runs["paged-float32"]
    assert paged["logits_cosine_min"] > 0.999999 and paged["top1_agreement"] == 1.0
    assert paged["bytes_h2d_per_step"] > 0
    # the link's busy time per step: its share of the step and its speed while copying
    assert paged["h2d_busy_s_per_step"] > 0
    assert paged["h2d_busy_share"] == pytest.approx(paged["h2d_busy_s_per_step"] / paged["s_per_step"])
    assert paged["h2d_gbps_while_busy"] == pytest.approx(
        paged["bytes_h2d_per_step"] / paged["h2d_busy_s_per_step"] / 1e9)
    # where the host's time goes: the hooks' get and prefetch calls, the wait for each step's logits
    assert paged["paged_units"] > 0
    assert 0 < paged["host_get_s_per_step"] < paged["s_per_step"]
    assert 0 <= paged["host_prefetch_s_per_step"] < paged["s_per_step"]
    assert 0 <= paged["host_sync_wait_s_per_step"] < paged["s_per_step"]
    acc = runs["accelerate-cpu_offload-float32"]
    if "error" not in acc:  # accelerate installed: its hooks must not lose the KV cache
        assert acc["logits_cosine_min"] > 0.999999 and acc["top1_agreement"] == 1.0
    if "paged-nvfp4" in runs:  # the CPU FP4 kernels are built
        assert runs["paged-nvfp4"]["logits_cosine_mean"] > 0.9
        assert runs["resident-nvfp4"]["logits_cosine_mean"] > 0.9 and runs["resident-nvfp4"]["tokens_per_s"] > 0
        assert runs["paged-nvfp4"]["step_vs_pcie_bound"] > 0
        # against the float32 model holding the dequantized 4-bit weights the kernels agree far
        # more closely than against the original weights (only the kernels' rounding differs)
        for name in ("resident-nvfp4", "paged-nvfp4", "paged-nvfp4-ssd"):
            deq = runs[name]["vs_dequantized"]
            assert deq["logits_cosine_min"] > 0.9999 and deq["top1_agreement"] == 1.0, name
        ssd = runs["paged-nvfp4-ssd"]
        assert ssd["bytes_ssd_per_step"] > 0
        read = json.loads(out.read_text())["ssd_read"]
        assert read["gbps"] > 0 and read["backend"] in ("io_uring", "pread")
        assert ssd["ssd_bound_s"] == pytest.approx(ssd["bytes_ssd_per_step"] / (read["gbps"] * 1e9))
        assert ssd["step_vs_ssd_bound"] > 0


def test_virtual_vram_compare_lru_and_skip(tmp_path, one_thread):
    """--compare-lru adds the LRU-only paged runs (same logits, keep_resident recorded);
    --skip leaves out accelerate and the SSD tier; a bad --skip name is refused."""
    out = tmp_path / "vv.json"
    assert virtual_vram.main(["--cpu", "--quick", "--batches", "1", "--new-tokens", "2", "--out", str(out),
                              "--ssd-dir", str(tmp_path), "--compare-lru", "--skip", "accelerate,ssd"]) == 0
    runs = json.loads(out.read_text())["runs"]["1"]
    assert runs["paged-float32"]["keep_resident"] and not runs["paged-float32-lru"]["keep_resident"]
    assert runs["paged-float32-lru"]["resident_bytes"] == 0
    assert runs["paged-float32-lru"]["logits_cosine_min"] > 0.999999
    assert not any(name.startswith("accelerate") or name.endswith("-ssd") for name in runs)
    assert "ssd_read" not in json.loads(out.read_text())
    with pytest.raises(SystemExit):
        virtual_vram.main(["--cpu", "--quick", "--skip", "resident"])


def test_decoder_cache_and_rope():
    """The benchmark's decoder: decoding through its preallocated KV cache gives the logits of a
    full forward over the same tokens; the complex rope equals the real-valued rotation; a cache
    refuses positions past its capacity; ops_per_step counts a step's non-view ops."""
    import torch

    shape = virtual_vram.DecoderShape(layers=2, d=64, d_ff=128, heads=4, kv_heads=2, vocab=97)
    model = virtual_vram.build(shape, torch.float32)
    ids = torch.randint(0, shape.vocab, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        caches = [virtual_vram.KVCache(9) for _ in model.layers]
        model(ids[:, :5], caches, 0)
        steps = [model(ids[:, t:t + 1], caches, t) for t in range(5, 9)]
        for t, got in zip(range(5, 9), steps):
            want = model(ids[:, :t + 1], [virtual_vram.KVCache(t + 1) for _ in model.layers], 0)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="capacity"):
            model(ids[:, :1], caches, 9)
    x = torch.randn(2, 3, 4, 16, generator=torch.Generator().manual_seed(2))
    pos = torch.tensor([0, 5, 17])
    ang = pos.float()[:, None] * (1.0 / 500000.0 ** (torch.arange(0, 16, 2).float() / 16))[None, :]
    cos, sin = ang.cos()[:, None], ang.sin()[:, None]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    want = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)
    torch.testing.assert_close(virtual_vram.rope(x, virtual_vram.rope_tables(pos, 16)), want)
    assert 10 < virtual_vram.ops_per_step(model, ids[:, :4]) < 200
