"""tools/wgmma_sass_check.py: a kernel whose wgmma pipeline ptxas serialized (a wait for all groups
after every HGMMA) is told apart from one that keeps a group in flight."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import wgmma_sass_check as check  # noqa: E402


def _listing(name: str, body: list[str]) -> str:
    lines = [f"\t\tFunction : {name}", "\t.headerflags\t@\"EF_CUDA_SM90\""]
    return "\n".join(lines + [f"        /*{16 * i:04x}*/  {op} ;  /* 0x0 */" for i, op in enumerate(body)])


PIPELINED = _listing("pipelined_kernel", [
    "WARPGROUP.ARRIVE", "HGMMA.64x64x16.F32.BF16 R24, R88, gdesc[UR4], R24, gsb0", "WARPGROUP.DEPBAR.LE gsb0, 0x1",
    "HGMMA.64x64x16.F32.BF16 R24, R92, gdesc[UR4], R24, gsb0", "WARPGROUP.DEPBAR.LE gsb0, 0x1",
    "WARPGROUP.DEPBAR.LE gsb0, 0x0", "EXIT"])
SERIALIZED = _listing("serialized_kernel", [
    "HGMMA.64x64x16.F32.BF16 R24, R88, gdesc[UR4], R24, gsb0", "WARPGROUP.DEPBAR.LE gsb0, 0x0",
    "HGMMA.64x64x16.F32.BF16 R24, R88, gdesc[UR4], R24, gsb0", "WARPGROUP.DEPBAR.LE gsb0, 0x0", "EXIT"])
NO_WGMMA = _listing("mma_sync_kernel", ["HMMA.16816.F32.BF16 R4, R8, R12, R4", "EXIT"])


def test_counts_hgmma_and_waits_per_kernel():
    got = check.wgmma_waits("\n".join([PIPELINED, SERIALIZED, NO_WGMMA]))
    assert got == {"pipelined_kernel": (2, 1), "serialized_kernel": (2, 2)}


def test_main_fails_on_a_serialized_kernel(monkeypatch, tmp_path, capsys):
    listings = {"ok.o": PIPELINED, "bad.o": PIPELINED + "\n" + SERIALIZED}

    class Done:
        def __init__(self, text: str) -> None:
            self.stdout = text

    monkeypatch.setattr(check, "find_cuobjdump", lambda: "cuobjdump")
    monkeypatch.setattr(check.subprocess, "run", lambda cmd, **_: Done(listings[Path(cmd[-1]).name]))
    assert check.main([str(tmp_path / "ok.o")]) == 0
    assert check.main([str(tmp_path / "bad.o")]) == 1
    assert "SERIALIZED: 2 HGMMA, 2 wait-all  serialized_kernel" in capsys.readouterr().out


def test_main_says_when_it_cannot_check(monkeypatch, capsys):
    monkeypatch.setattr(check, "find_cuobjdump", lambda: None)
    assert check.main(["any.o"]) == 2
    assert "not checked" in capsys.readouterr().out
