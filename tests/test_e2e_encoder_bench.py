"""benchmarks/e2e_encoder.py's model on the CPU (the benchmark itself needs a GPU): the layer with
q, k and v as one Linear (--fused-qkv) computes what the layer with three computes, on the same
weights."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import e2e_encoder  # noqa: E402


def test_fused_qkv_layer_computes_the_same():
    torch.manual_seed(0)
    plain = e2e_encoder.EncoderLayer(64, 4, 128).eval()
    fused = e2e_encoder.EncoderLayer(64, 4, 128, fused_qkv=True).eval()
    state = {k: v for k, v in plain.state_dict().items() if not k.startswith(("q.", "k.", "v."))}
    for part in ("weight", "bias"):
        state[f"qkv.{part}"] = torch.cat([plain.state_dict()[f"{p}.{part}"] for p in "qkv"])
    fused.load_state_dict(state)
    x = torch.randn(2, 10, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)
    assert not hasattr(fused, "q") and fused.qkv.out_features == 192
    assert len(e2e_encoder.encoder(fused_qkv=True)) == e2e_encoder.LAYERS
