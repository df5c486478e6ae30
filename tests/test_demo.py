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
