"""Instruction counts of each tensor-core kernel's main loop in a compiled CUDA object: the measure,
taken without a GPU, of a change to an issue-bound kernel such as the tiled FP4 GEMM
(docs/fp4_gpu_notes.md, twenty-fifth session: its time follows the instructions it issues).

The main loop is the backward branch whose body holds the most HGMMA / HMMA (the shortest such
body on a tie). Per kernel it prints the loop's instructions, its MMAs, instructions per MMA, its
local-memory accesses (spills) and its shared-memory stores by width.

Usage: python tools/sass_loop_stats.py OBJECT [--match REGEX]   (nvcc -c output or cubin)
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wgmma_sass_check import FUNCTION_LINE, listings  # noqa: E402

_INSTR = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_TARGET = re.compile(r"0x([0-9a-f]+)")


@dataclass
class LoopStats:
    instructions: int
    mmas: int
    local: int           # LDL / STL in the loop
    stores: dict[str, int]  # STS opcodes (with width suffix) in the loop

    @property
    def per_mma(self) -> float:
        return self.instructions / self.mmas


def kernels(sass: str) -> dict[str, list[tuple[int, str, str]]]:
    """(address, opcode, operands) of each function of a cuobjdump -sass listing."""
    out: dict[str, list[tuple[int, str, str]]] = {}
    body = None
    for line in sass.splitlines():
        m = FUNCTION_LINE.search(line)
        if m:
            body = out.setdefault(m.group(1), [])
            continue
        m = _INSTR.match(line)
        if m and body is not None:
            body.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return out


def main_loop(instrs: list[tuple[int, str, str]]) -> LoopStats | None:
    """The main loop of one kernel's instructions, or None without a loop holding an MMA."""
    best: tuple[int, list[tuple[int, str, str]]] | None = None
    for addr, op, rest in instrs:
        target = _TARGET.search(rest) if op.startswith("BRA") else None
        if target is None or int(target.group(1), 16) >= addr:
            continue
        body = [i for i in instrs if int(target.group(1), 16) <= i[0] <= addr]
        mmas = sum(op.startswith(("HGMMA", "HMMA")) for _, op, _ in body)
        if mmas and (best is None or (mmas, -len(body)) > (best[0], -len(best[1]))):
            best = (mmas, body)
    if best is None:
        return None
    mmas, body = best
    stores = collections.Counter(op for _, op, _ in body if op.startswith("STS"))
    local = sum(op.startswith(("LDL", "STL")) for _, op, _ in body)
    return LoopStats(len(body), mmas, local, dict(stores))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("object", help="nvcc -c output or cubin")
    ap.add_argument("--match", default="", help="only kernels whose (mangled) name matches this regex")
    args = ap.parse_args(argv)
    found = listings([args.object])
    if found is None:
        print("sass_loop_stats: no cuobjdump (PATH or triton's backend)")
        return 2
    for name, instrs in sorted(kernels(found[0][1]).items()):
        if not re.search(args.match, name):
            continue
        s = main_loop(instrs)
        if s is not None:
            print(f"{s.instructions:6d} instr {s.mmas:4d} MMA {s.per_mma:6.1f}/MMA local {s.local:3d} "
                  f"STS {s.stores}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
