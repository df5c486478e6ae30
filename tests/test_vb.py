"""vb.enable / apply / enable_balanced_mode (SPEC 10): an honest report, never a speed-up claim."""
from __future__ import annotations

import pytest
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
    r = vb.apply(m, "memory")
    assert type(m[0]) is nn.Linear and r["fp4"]["format"] is None and "no usable" in r["fp4"]["reason"]


def test_enable_applies_to_models_built_afterwards():
    from apt_ext.nn import FP4Linear
    vb.enable("balanced", verbose=False)
    m = APTModel(tiny())
    assert isinstance(m.decoder[0].ffn.up, FP4Linear)        # 64x1024 >= 65536 weights
    assert type(m.decoder[0].attn.proj) is nn.Linear          # 64x64 is below the balanced threshold
    r = vb.apply(nn.Sequential(nn.Linear(256, 256)), "memory")
    assert r["model"]["linear_to_fp4"] == 1
    assert r["model"]["weight_bytes_after"] < 0.3 * r["model"]["weight_bytes_before"]
    vb.disable()
    assert type(APTModel(tiny()).decoder[0].ffn.up) is nn.Linear
