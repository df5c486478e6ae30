"""vb.enable / apply / enable_balanced_mode (docs/contract.md §10): an honest report, never a speed-up claim."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import apt_ext.vb as vb
from apt_ext.model import APTModel, APTModelConfiguration


@pytest.fixture(autouse=True)
def _reset():
    yield
    vb.disable()


def tiny() -> APTModelConfiguration:
    return APTModelConfiguration(vocab_size=64, d_model=64, num_heads=2, d_ff=1024, num_decoder_layers=1,
                                 decoder_only=True, max_seq_len=16)


def test_enable_reports_what_is_active(capsys):
    r = vb.enable_balanced_mode(verbose=True)
    out = capsys.readouterr().out
    assert r["mode"] == "balanced" and r["device"] == "cpu"
    assert set(r["kernels"]) >= {"fp4_linear", "left_spin_residual"}
    # nothing is configured in CI; a backend configured here must carry whether it answered
    assert all(b["answered"] in (True, False, None) and b["detail"] for b in r["cloud_backends"])
    assert "cloud backends:" in out and "device=cpu" in out
    for word in ("faster", "speed-up", "speedup", "x speed"):
        assert word not in out.lower()
    assert r["fp4"]["format"] == "nvfp4" and r["kernels"]["fp4_linear"] == ["cpu"]  # the CPU kernel is built


def test_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        vb.enable("turbo", verbose=False)
    with pytest.raises(TypeError, match="model"):
        vb.apply("not a model")


def test_speed_mode_leaves_model_alone():
    m = nn.Sequential(nn.Linear(512, 512))
    r = vb.apply(m, "speed")
    assert type(m[0]) is nn.Linear and r["model"]["linear_to_fp4"] == 0
    assert r["model"]["weight_bytes_before"] == r["model"]["weight_bytes_after"]


def test_apply_without_fp4_kernel_says_why(monkeypatch):
    monkeypatch.setattr(vb, "_kernels", lambda: {"fp4_linear": [], "left_spin_residual": ["cpu"]})
    m = nn.Sequential(nn.Linear(512, 512))
    r = vb.apply(m, "memory", for_training=False)
    assert type(m[0]) is nn.Linear and r["fp4"]["format"] is None and "no usable" in r["fp4"]["reason"]
    assert r["model"]["fp4"] == "off"


def test_enable_applies_fp4_to_later_models_at_inference():
    from apt_ext.nn import FP4Linear
    vb.enable("balanced", verbose=False)
    m = APTModel(tiny())
    assert type(m.decoder[0].ffn.up) is nn.Linear and vb.report(m)["fp4"] == "pending"   # nothing changed yet
    m.eval()
    with torch.no_grad():
        m(torch.randint(0, 64, (1, 8)))
    assert isinstance(m.decoder[0].ffn.up, FP4Linear)        # 64x1024 >= 65536 weights
    assert type(m.decoder[0].attn.proj) is nn.Linear          # 64x64 is below the balanced threshold
    assert vb.report(m)["fp4"] == "applied" and vb.report(m)["linear_to_fp4"] == 2
    r = vb.apply(nn.Sequential(nn.Linear(256, 256)), "memory", for_training=False)
    assert r["model"]["linear_to_fp4"] == 1 and r["model"]["fp4"] == "quantized"
    assert r["model"]["weight_bytes_after"] < 0.3 * r["model"]["weight_bytes_before"]
    vb.disable()
    m2 = APTModel(tiny()).eval()
    with torch.no_grad():
        m2(torch.randint(0, 64, (1, 8)))
    assert type(m2.decoder[0].ffn.up) is nn.Linear and vb.report(m2) is None


# ---- vb never changes which parameters train (docs/contract.md §10) ------------------------------------------
def _train_steps(model: nn.Module, x: torch.Tensor, steps: int = 2) -> dict[str, torch.Tensor]:
    """Train ``steps`` AdamW steps; returns the parameters (by name) that changed, after training."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("mode", vb.MODES)
def test_enable_then_train_trains_every_parameter(mode, apt_seed):
    cfg = dataclasses.replace(tiny(), dropout=0.0)
    x = torch.randint(0, 64, (4, 9))
    torch.manual_seed(apt_seed)
    plain = APTModel(cfg)
    trainable = {n for n, p in plain.named_parameters() if p.requires_grad}
    without_vb = _train_steps(plain, x)
    vb.enable(mode, verbose=False)
    torch.manual_seed(apt_seed)
    model = APTModel(cfg)
    with_vb = _train_steps(model, x)
    assert set(without_vb) == trainable == set(with_vb)
    assert all(torch.equal(with_vb[n], without_vb[n]) for n in trainable)   # the very same training
    expected = "off" if mode == "speed" else "kept_trainable"    # speed mode never uses FP4
    assert vb.report(model)["fp4"] == expected
    model.eval()                                         # an evaluation between epochs changes nothing
    with torch.no_grad():
        model(x)
    assert vb.report(model)["fp4"] == expected and type(model.decoder[0].ffn.up) is nn.Linear
    assert set(_train_steps(model, x)) == trainable


def test_inference_first_then_training_restores_exact_float_weights(capsys):
    from apt_ext.nn import FP4Linear
    model = APTModel(dataclasses.replace(tiny(), dropout=0.0))
    up = model.decoder[0].ffn.up
    weight, original = up.weight, up.weight.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)       # built before vb touches the model
    r = vb.apply(model, "balanced", verbose=True)
    out = capsys.readouterr().out
    assert r["model"]["fp4"] == "pending" and "model: FP4 pending (applied at the first inference forward" in out
    x = torch.randint(0, 64, (2, 9))
    with torch.no_grad():                                   # a sanity check before training: FP4 now
        model(x)
    assert "APTModel: FP4 applied: 2 Linear layers -> nvfp4 for inference" in capsys.readouterr().out
    assert isinstance(model.decoder[0].ffn.up, FP4Linear) and model.decoder[0].ffn.up.bias is up.bias
    logits = model(x[:, :-1])                               # a training forward: float layers come back
    assert model.decoder[0].ffn.up is up and up.weight is weight and torch.equal(weight, original)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    opt.step()
    assert not torch.equal(weight, original)                # the optimizer built earlier trained it
    rep = vb.report(model)
    assert rep["fp4"] == "kept_trainable" and rep["restored_to_float"] == 2 and "exact" in rep["reason"]
    assert rep["trainable_parameters"] == model.num_parameters()


def test_memory_mode_restores_from_fp4_with_a_warning():
    model = APTModel(dataclasses.replace(tiny(), dropout=0.0))
    vb.apply(model, "memory")
    x = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        model(x)
    fp4 = model.decoder[0].ffn.up.weight.dequantize()
    with pytest.warns(RuntimeWarning, match="dequantised from FP4"):
        model(x)
    up = model.decoder[0].ffn.up
    assert type(up) is nn.Linear and up.weight.requires_grad and torch.equal(up.weight.detach(), fp4)


def test_for_training_false_and_true():
    from apt_ext.nn import FP4Linear
    model = APTModel(tiny())
    r = vb.apply(model, "balanced", for_training=False)
    assert r["model"]["fp4"] == "quantized" and isinstance(model.decoder[0].ffn.up, FP4Linear)
    x = torch.randint(0, 64, (1, 8))
    with pytest.warns(RuntimeWarning, match="frozen"):
        model(x)                                            # asked for: frozen, and said so
    with pytest.warns(RuntimeWarning, match="for_training=False dropped the float copy"):
        r = vb.apply(model, for_training=True)
    assert r["model"]["fp4"] == "kept_trainable" and type(model.decoder[0].ffn.up) is nn.Linear
    assert r["model"]["trainable_parameters"] == model.num_parameters()
    with pytest.raises(TypeError, match="for_training"):
        vb.apply(model, for_training="no")


def test_generate_applies_fp4():
    from apt_ext.nn import FP4Linear
    vb.enable("memory", verbose=False)
    model = APTModel(tiny())
    model.generate(torch.randint(0, 64, (1, 4)), 2)
    assert isinstance(model.decoder[0].attn.proj, FP4Linear) and vb.report(model)["fp4"] == "applied"
    assert model.training                                   # generate restored train mode


@pytest.mark.parametrize("saved", ["float", "vb_fp4", "use_fp4"])
def test_from_pretrained_under_every_vb_mode(saved, tmp_path):
    """A checkpoint saved float, saved after vb put it in FP4, or built with use_fp4 loads under
    every vb state, and gives the saved model's outputs."""
    cfg = tiny() if saved != "use_fp4" else dataclasses.replace(tiny(), use_fp4="mxfp4")
    model = APTModel(cfg).eval()
    if saved == "vb_fp4":
        vb.apply(model, "memory", for_training=False)
    x = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        ref = model(x)
    model.save_pretrained(tmp_path)
    for mode in (None, *vb.MODES):
        vb.disable()
        if mode is not None:
            vb.enable(mode, verbose=False)
        loaded = APTModel.from_pretrained(tmp_path)
        assert {n for n, _ in loaded.named_parameters()} == {n for n, _ in model.named_parameters()}
        with torch.no_grad():
            y = loaded.eval()(x)
        if mode in (None, "speed") or saved != "float":
            assert torch.equal(y, ref), mode                 # nothing left for vb to quantise, or vb off
        else:
            assert torch.allclose(y, ref, atol=0.5) and vb.report(loaded)["fp4"] == "applied"
