"""``apt-ext demo --quick`` runs end to end and ends with its summary."""
from __future__ import annotations

import torch

from apt_ext.cli.demo import Summary, run_parts
from apt_ext.cli.main import main


def test_demo_quick_runs_and_keeps_its_results_in_the_default_out_dir(capsys, tmp_path, monkeypatch):
    """Without --out-dir the results go to ./apt-ext-demo, which stays, and the demo says where."""
    monkeypatch.chdir(tmp_path)
    n = torch.get_num_threads()
    try:
        rc = main(["demo", "--quick", "--device", "cpu", "--threads", "1"])
    finally:
        torch.set_num_threads(n)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "== summary ==" in out and "train (left-spin)" in out and "FAILED" not in out
    assert "VGPU offload (nvfp4)" in out  # the 4-bit model paged as well ("virtual VRAM" in small)
    results = tmp_path / "apt-ext-demo"
    assert f"results go to {results}" in out and f"results kept in {results}" in out
    assert f"loss curve: {results / 'train' / 'loss.png'}" in out
    for name in ("loss.png", "losses.json", "checkpoint.pt", "model/model.safetensors"):
        assert (results / "train" / name).is_file(), name
    assert (results / "memory.sqlite").is_file()
    assert "/tmp/apt_demo_" not in out


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
