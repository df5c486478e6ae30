"""APT model on a CUDA GPU: bf16 autocast training, causality, KV cache, native left-spin op,
FP4 quantised model, the trainer and the demo (quick)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from apt_ext import _native
from apt_ext.model import APTModel, APTModelConfiguration
from apt_ext.model.left_spin import _left_spin_torch, left_spin


def cfg(**kw):
    base = dict(vocab_size=128, d_model=128, num_heads=4, d_ff=256, num_encoder_layers=2, num_decoder_layers=2,
                decoder_only=True, dropout=0.0, max_seq_len=128)
    base.update(kw)
    return APTModelConfiguration(**base)


@pytest.mark.parametrize("decoder_only", [True, False])
def test_bf16_train_step_and_causality(decoder_only):
    torch.manual_seed(0)
    m = APTModel(cfg(decoder_only=decoder_only)).cuda()
    opt = m.configure_optimizers(lr=1e-3)
    x = torch.randint(0, 128, (4, 65), device="cuda")
    first = None
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = m(x[:, :-1]) if decoder_only else m(x, x[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    m.eval()
    y = x.clone()
    y[:, 40:] = (y[:, 40:] + 1) % 128
    with torch.no_grad():
        a = m(x) if decoder_only else m(x, x)
        b = m(y) if decoder_only else m(x, y)
    torch.testing.assert_close(a[:, :40], b[:, :40], rtol=1e-4, atol=1e-4)


def test_kv_cache_generation_on_gpu():
    torch.manual_seed(0)
    m = APTModel(cfg()).cuda().eval()
    p = torch.randint(0, 128, (3, 8), device="cuda")
    assert torch.equal(m.generate(p, 32), m.generate(p, 32, use_cache=False))


@pytest.mark.skipif(not _native.has_kernel("left_spin_residual", "CUDA"), reason="no CUDA left_spin_residual kernel")
def test_native_left_spin_matches_formula_on_gpu():
    u, du, dp = (torch.randn(4, 33, 256, device="cuda") for _ in range(3))
    pp = torch.rand(4, 33, device="cuda")
    out, phi = left_spin(u, du, dp, pp)
    ro, rp = _left_spin_torch(u, du, dp, pp, 0.5, 0.3, 0.7, 1.0, 0.5, 1e-6)
    torch.testing.assert_close(out, ro, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(phi, rp, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4", "nf4"])
def test_fp4_model_on_gpu(fmt):
    torch.manual_seed(0)
    m = APTModel(cfg()).cuda().eval()
    x = torch.randint(0, 128, (2, 64), device="cuda")
    with torch.no_grad():
        ref = m(x)
    import apt_ext
    apt_ext.quantize_(m, fmt, filter_fn=lambda mod, fqn: fqn != "lm_head")
    with torch.no_grad():
        y = m(x)
    assert F.cosine_similarity(y.flatten(0, 1), ref.flatten(0, 1), dim=-1).mean() > 0.95


def test_trainer_and_demo_quick_on_gpu(tmp_path, capsys):
    from apt_ext.cli.main import main
    assert main(["demo", "--quick", "--device", "cuda", "--out-dir", str(tmp_path)]) == 0
    assert "FAILED" not in capsys.readouterr().out
