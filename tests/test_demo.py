"""``apt-ext demo --quick`` runs end to end and ends with its summary."""
from __future__ import annotations

import torch

from apt_ext.cli.main import main


def test_demo_quick_runs(capsys, tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(["demo", "--quick", "--device", "cpu", "--out-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(n)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "== summary ==" in out and "train (left-spin)" in out and "FAILED" not in out
    assert (tmp_path / "train" / "loss.png").is_file()
    text_round_trip(tmp_path / "train", capsys)


def text_round_trip(run_dir, capsys) -> None:
    """The model the demo trained: text in, text out, through the API and the CLI."""
    from apt_ext.model import APTModel
    from apt_ext.train.data import ByteTokenizer
    model = APTModel.from_pretrained(run_dir)
    assert isinstance(model.tokenizer, ByteTokenizer)
    prompt = "The default value of"
    text = model.generate(prompt, 12)
    ids = torch.tensor([model.tokenizer.encode(prompt)])
    assert isinstance(text, str) and text == model.tokenizer.decode(model.generate(ids, 12)[0, ids.shape[1]:].tolist())
    assert model.generate([prompt, "x"], 12)[0] == text     # a batch (left-padded) gives the same row
    rc = main(["generate", "--checkpoint", str(run_dir), "--max-tokens", "12", "--device", "cpu", prompt])
    captured = capsys.readouterr()
    assert rc == 0 and captured.out == text + "\n"
    assert "12 generated" in captured.err
