"""tools/sass_loop_stats.py: the main loop (the backward branch around the most MMAs) of each kernel
in a SASS listing, its instruction count, spills and shared-memory stores."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import sass_loop_stats as stats  # noqa: E402


def _listing(name: str, body: list[str]) -> str:
    lines = [f"\t\tFunction : {name}", "\t.headerflags\t@\"EF_CUDA_SM90\""]
    return "\n".join(lines + [f"        /*{16 * i:04x}*/  {op} ;  /* 0x0 */" for i, op in enumerate(body)])


KERNEL = _listing("gemm", [
    "MOV R1, c[0x0][0x28]",                                            # 0x00
    "IADD3 R2, R2, 0x1, RZ",                                           # 0x10: copy loop, no MMA
    "@P0 BRA 0x10",                                                    # 0x20
    "LDS.128 R8, [R4]",                                                # 0x30: main loop
    "STS.128 [R5], R8",
    "STS [R5+0x4], R9",
    "STL [R1], R8",
    "HGMMA.64x64x16.F32.BF16 R24, R88, gdesc[UR4], R24, gsb0",
    "HGMMA.64x64x16.F32.BF16 R56, R92, gdesc[UR4], R56, gsb0",
    "@P1 BRA 0x30",                                                    # 0x90
    "EXIT"])
NO_MMA = _listing("copy", ["IADD3 R2, R2, 0x1, RZ", "@P0 BRA 0x0", "EXIT"])


def test_main_loop_is_the_branch_around_the_mmas():
    ks = stats.kernels("\n".join([KERNEL, NO_MMA]))
    assert sorted(ks) == ["copy", "gemm"]
    s = stats.main_loop(ks["gemm"])
    assert (s.instructions, s.mmas, s.local, s.stores) == (7, 2, 1, {"STS.128": 1, "STS": 1})
    assert s.per_mma == 3.5
    assert stats.main_loop(ks["copy"]) is None


def test_main_prints_each_kernel_with_a_loop(monkeypatch, capsys):
    monkeypatch.setattr(stats, "listings", lambda objects: [(objects[0], "\n".join([KERNEL, NO_MMA]))])
    assert stats.main(["k.o", "--match", "gem"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].split()[:4] == ["7", "instr", "2", "MMA"] and out[0].endswith("gemm")
