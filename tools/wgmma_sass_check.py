"""Checks that ptxas kept the wgmma pipeline of apt_ext's kernels: in the SASS of an sm_90a object,
every kernel that issues HGMMA (wgmma.mma_async) may wait for all of its groups
(`WARPGROUP.DEPBAR.LE gsb0, 0x0`) once, at the end of its main loop. ptxas serializes the whole
kernel instead (a wait for zero groups after every HGMMA, and no warning in its report) when it
cannot prove the pipeline safe, e.g. with shared-memory stores between a wgmma and its wait.

Usage: python tools/wgmma_sass_check.py OBJECT [OBJECT ...]   (nvcc -c outputs or cubins)
Exit status 1 if a kernel is serialized, 2 if cuobjdump is missing; prints one line per kernel.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

FUNCTION_LINE = re.compile(r"Function : (\S+)")
_WAIT_ALL = "WARPGROUP.DEPBAR.LE gsb0, 0x0"


def find_cuobjdump() -> str | None:
    """cuobjdump from PATH, else the copy Triton's NVIDIA backend carries."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton  # noqa: PLC0415 - optional: only its bundled binary is wanted
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.isfile(path) else None


def listings(objects: list[str]) -> list[tuple[str, str]] | None:
    """(object, its cuobjdump -sass listing) for each object; None without cuobjdump."""
    tool = find_cuobjdump()
    if tool is None:
        return None
    return [(obj, subprocess.run([tool, "-sass", obj], check=True, capture_output=True, text=True).stdout)
            for obj in objects]


def wgmma_waits(sass: str) -> dict[str, tuple[int, int]]:
    """Per kernel of a cuobjdump -sass listing that issues HGMMA: (HGMMA count, wait-all count)."""
    counts: dict[str, list[int]] = {}
    name = None
    for line in sass.splitlines():
        m = FUNCTION_LINE.search(line)
        if m:
            name = m.group(1)
            counts[name] = [0, 0]
        elif name is not None:
            counts[name][0] += "HGMMA" in line
            counts[name][1] += _WAIT_ALL in line
    return {k: (h, w) for k, (h, w) in counts.items() if h > 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("objects", nargs="+", help="nvcc -c outputs or cubins built for sm_90a")
    args = ap.parse_args(argv)
    found = listings(args.objects)
    if found is None:
        print("wgmma_sass_check: no cuobjdump (PATH or triton's backend): not checked")
        return 2
    bad = 0
    for _, sass in found:
        for kernel, (hgmma, waits) in sorted(wgmma_waits(sass).items()):
            serialized = waits > 1
            bad += serialized
            print(f"{'SERIALIZED' if serialized else 'pipelined'}: {hgmma} HGMMA, {waits} wait-all  {kernel}")
    print(f"wgmma_sass_check: {bad} serialized kernel(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
