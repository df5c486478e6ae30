"""Text in, text out (docs/model.md): ``model.generate(str | list[str])`` with the model's
tokenizer, the errors that say what to pass, and ``apt-ext generate``."""
from __future__ import annotations

import pytest
import torch

from apt_ext.model import APTModel, APTModelConfiguration
from apt_ext.train.data import ByteTokenizer


def byte_model(**kw) -> APTModel:
    cfg = dict(vocab_size=256, d_model=32, num_heads=2, d_ff=64, num_decoder_layers=1, decoder_only=True,
               max_seq_len=64, dropout=0.0, autopoietic_rank=2, init_std=0.2)
    return APTModel(APTModelConfiguration(**(cfg | kw))).eval()


def test_text_equals_the_token_path():
    model = byte_model()
    text = model.generate("héllo", 10)
    ids = torch.tensor([list("héllo".encode())])
    assert text == ByteTokenizer().decode([t for t in model.generate(ids, 10)[0, ids.shape[1]:].tolist() if t != 0])
    assert isinstance(text, str)


def test_generated_pad_ids_are_not_text(monkeypatch):
    """A generated pad id (0 without pad_token_id: a NUL byte) is left out of the text, so the
    text can go to AIM-Memory, which refuses NUL (the design document's generate_with_memory)."""
    from apt_ext.model import generation

    model = byte_model()
    monkeypatch.setattr(generation, "generate",
                        lambda m, ids, n, **kw: torch.cat([ids, torch.tensor([[104, 0, 105, 0]])], 1))
    assert model.generate("x", 4) == "hi"
    model = byte_model(pad_token_id=7)
    assert model.generate("x", 4) == "h\x00i\x00"  # with a pad id of its own, 0 is a byte like any other
    monkeypatch.setattr(generation, "generate",
                        lambda m, ids, n, **kw: torch.cat([ids, torch.tensor([[104, 7, 105]])], 1))
    assert model.generate("x", 3) == "hi"


def test_list_of_prompts_is_one_left_padded_batch():
    model = byte_model()
    prompts = ["a", "a longer prompt", "mid"]
    assert model.generate(prompts, 6) == [model.generate(p, 6) for p in prompts]


def test_bos_and_eos_of_the_config():
    model = byte_model(bos_token_id=1, eos_token_id=2)
    ids = torch.tensor([[1] + list(b"hi")])
    out = model.generate(ids, 8)[0, 3:].tolist()
    text = model.generate("hi", 8)
    assert text == ByteTokenizer().decode([t for t in (out[:out.index(2)] if 2 in out else out) if t != 0])


def test_encoder_decoder_text_and_its_errors():
    model = byte_model(decoder_only=False, num_encoder_layers=1)
    with pytest.raises(ValueError, match="bos_token_id"):
        model.generate("source text", 4)
    with pytest.raises(ValueError, match=r"model\(src, tgt\).*decoder_only=True"):
        model(torch.randint(0, 256, (1, 5)))
    model = byte_model(decoder_only=False, num_encoder_layers=1, bos_token_id=1)
    src = torch.tensor([list(b"source text")])
    ref = model.generate(torch.ones(1, 1, dtype=torch.long), 4, src=src)[0, 1:].tolist()
    # a generated pad id (0) is not text: the text path leaves it out, as in the decoder-only tests
    assert model.generate("source text", 4) == ByteTokenizer().decode([t for t in ref if t != 0])


def test_text_needs_a_tokenizer_and_bad_prompts():
    model = byte_model(vocab_size=300)
    with pytest.raises(ValueError, match="text needs a tokenizer"):
        model.generate("hello", 2)
    model.tokenizer = ByteTokenizer()
    assert isinstance(model.generate("hello", 2), str)
    with pytest.raises(TypeError, match="input_ids"):
        model.generate(123, 2)
    with pytest.raises(TypeError, match="a list of str"):
        model.generate(["ok", 3], 2)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.generate("x" * 60, 10)
    with pytest.raises(TypeError, match="attention_mask"):
        model.generate("hello", 2, attention_mask=torch.ones(1, 5))


def test_tokenizer_is_saved_and_loaded(tmp_path):
    model = byte_model(vocab_size=300)
    model.tokenizer = ByteTokenizer()
    model.save_pretrained(tmp_path / "m")
    loaded = APTModel.from_pretrained(tmp_path / "m").eval()
    assert isinstance(loaded.tokenizer, ByteTokenizer)
    assert loaded.generate("abc", 5) == model.generate("abc", 5)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4", "nf4"])
def test_fp4_checkpoint_of_every_format_loads(fmt, tmp_path):
    """from_pretrained rebuilds FP4 layers from the checkpoint (format read from the scales' dtype)."""
    import apt_ext
    from apt_ext.nn import FP4Linear
    model = byte_model(d_model=64, d_ff=128)
    apt_ext.quantize_(model, fmt, filter_fn=lambda m, fqn: fqn.endswith("ffn.up"))
    model.save_pretrained(tmp_path)
    loaded = APTModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.decoder[0].ffn.up, FP4Linear) and loaded.decoder[0].ffn.up.fmt == fmt
    x = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_round_trip_on_the_model_the_demo_trains(capsys, tmp_path):
    """`apt-ext demo --quick` trains and saves a model; it answers text with text through the API
    and through `apt-ext generate`, the same continuation both ways."""
    from apt_ext.cli.main import main
    n = torch.get_num_threads()
    try:
        assert main(["demo", "--quick", "--device", "cpu", "--threads", "1", "--out-dir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(n)
    capsys.readouterr()
    run_dir = tmp_path / "train"
    model = APTModel.from_pretrained(run_dir)
    assert isinstance(model.tokenizer, ByteTokenizer)
    prompt = "The default value of"
    text = model.generate(prompt, 12)
    ids = torch.tensor([model.tokenizer.encode(prompt)])
    out = model.generate(ids, 12)[0, ids.shape[1]:].tolist()
    assert isinstance(text, str) and text == model.tokenizer.decode([t for t in out if t != 0])  # pad ids are not text
    assert model.generate([prompt, "x"], 12)[0] == text     # a batch (left-padded) gives the same row
    rc = main(["generate", "--checkpoint", str(run_dir), "--max-tokens", "12", "--device", "cpu", prompt])
    captured = capsys.readouterr()
    assert rc == 0 and captured.out == text + "\n"
    assert "12 generated" in captured.err
