"""``apt-ext demo --quick`` runs end to end and ends with its summary."""
from __future__ import annotations

import torch

from apt_ext.cli.demo import Summary, run_parts
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


def test_a_part_whose_optional_package_is_missing_is_skipped_not_failed(capsys):
    """The GPU image had no sentence-transformers: the demo must say so and still pass."""
    def needs_missing_package():
        import apt_ext_no_such_package  # noqa: F401

    def broken():
        raise RuntimeError("boom")

    summary = Summary()
    run_parts([("AIM-Memory", needs_missing_package), ("other", broken), ("fine", lambda: None)], summary)
    assert summary.rows[0][:2] == ("AIM-Memory", "skipped") and "apt_ext_no_such_package" in summary.rows[0][2]
    assert summary.rows[1][:2] == ("other", "FAILED") and summary.failed
    assert len(summary.rows) == 2  # a part that reports nothing adds no row
    assert "skipped: optional package" in capsys.readouterr().out
