"""Compile one of inductor's generated Triton kernel files for sm_90 without a GPU, with whichever
Triton is first on the path, and optionally shrink it to the lines a compile failure needs.

Inductor's kernel files (under TORCHINDUCTOR_CACHE_DIR, brought back from the device machine)
import torch's runtime helpers and carry their signature in a decorator; this takes the
``@triton.jit`` function alone, maps the helpers it uses onto triton.language, and compiles it
with ``triton.compile`` for an sm_90 target. Used to reproduce the H200's Triton 3.6 failure on
the decomposed left-spin kernel (docs/fp4_gpu_notes.md, twenty-second session) with the Triton
3.6 wheel installed into a side folder:

    pip install --target /tmp/triton36 --no-deps /opt/pypi/files/triton-3.6.0-*.whl
    PYTHONPATH=/tmp/triton36 python tools/triton_kernel_repro.py KERNEL.py [--xblock 1] [--warps 2]
    PYTHONPATH=/tmp/triton36 python tools/triton_kernel_repro.py KERNEL.py --minimize "does not dominate"

--minimize removes the kernel body's lines one at a time (repeatedly, from the end) while the
compile still fails with a message containing the given text, and prints what is left.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HEADER = "import triton\nimport triton.language as tl\nfrom triton.language.extra import libdevice\n"


def jit_source(text: str) -> str:
    """The file's ``@triton.jit`` function with inductor's helpers mapped onto triton.language."""
    body = text[text.index("@triton.jit"):]
    body = body.replace("triton_helpers.maximum", "tl.maximum").replace("triton_helpers.minimum", "tl.minimum")
    return HEADER + body.replace("tl_math.", "tl.math.")


def compile_kernel(path: Path, blocks: dict[str, int], warps: int) -> None:
    """Compiles the kernel in ``path`` for sm_90, its block-size parameters (XBLOCK, YBLOCK,
    R0_BLOCK: those it has) from ``blocks``, any other constexpr parameter from the file's
    inductor_meta (else 1); raises what triton.compile raises."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    text = path.read_text()
    match = re.search(r"'signature': (\{[^}]*\})", text)
    if match is None:
        raise ValueError(f"{path}: no 'signature' in the decorator (not an inductor kernel file?)")
    types = ast.literal_eval(match.group(1))
    with tempfile.TemporaryDirectory() as tmp:  # triton.jit reads its source from a file
        source = Path(tmp) / "kernel_repro.py"
        source.write_text(jit_source(text))
        spec = importlib.util.spec_from_file_location("kernel_repro", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fn = next(v for k, v in vars(module).items() if k.startswith("triton_") and hasattr(v, "arg_names"))
        consts = {k: v for k, v in blocks.items() if k in fn.arg_names}
        for arg in fn.arg_names:  # other constexprs (e.g. RSPLIT_SIZE): inductor_meta's value, else 1
            if types.get(arg) == "constexpr" and arg not in consts:
                found = re.search(rf"'{arg}': (\d+)", text)
                consts[arg] = int(found.group(1)) if found else 1
        signature = {a: "constexpr" if a in consts else types[a] for a in fn.arg_names}
        attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if signature[a].startswith("*")}
        src = ASTSource(fn=fn, signature=signature, attrs=attrs,
                        constexprs={(fn.arg_names.index(c),): v for c, v in consts.items()})
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})


def fails_with(path: Path, text: str, blocks: dict[str, int], warps: int) -> bool:
    """Whether compiling ``path`` (in a child process: MLIR prints to stderr) fails with ``text``."""
    flags = [f for k, v in blocks.items() for f in (f"--{k.lower().replace('_', '')}", str(v))]
    r = subprocess.run([sys.executable, __file__, str(path), "--warps", str(warps), *flags],
                       capture_output=True, text=True)
    return r.returncode != 0 and text in r.stdout + r.stderr


def minimize(path: Path, text: str, blocks: dict[str, int], warps: int) -> str:
    """The kernel file with every body line removed whose removal keeps the failure."""
    lines = path.read_text().split("\n")
    first = next(i for i, line in enumerate(lines) if line.startswith("def ")) + 1
    keep = ("xnumel", "r0_numel", "R0_BLOCK")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "candidate.py"
        work.write_text("\n".join(lines))
        if not fails_with(work, text, blocks, warps):
            raise SystemExit(f"{path}: the compile does not fail with {text!r}")
        changed = True
        while changed:
            changed = False
            for i in range(len(lines) - 1, first - 1, -1):
                if not lines[i].strip() or lines[i].strip().startswith(keep):
                    continue
                work.write_text("\n".join(lines[:i] + lines[i + 1:]))
                if fails_with(work, text, blocks, warps):
                    lines, changed = lines[:i] + lines[i + 1:], True
    return "\n".join(lines[first - 1:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kernel", type=Path, help="an inductor-generated Triton kernel file")
    ap.add_argument("--xblock", type=int, default=1, help="XBLOCK (default 1)")
    ap.add_argument("--yblock", type=int, default=16, help="YBLOCK of a 2-D pointwise kernel (default 16)")
    ap.add_argument("--r0block", type=int, default=64, help="R0_BLOCK of a looped reduction kernel (default 64)")
    ap.add_argument("--warps", type=int, default=2, help="num_warps (default 2)")
    ap.add_argument("--minimize", metavar="TEXT", help="shrink the kernel while its compile fails with TEXT")
    a = ap.parse_args()
    if not a.kernel.is_file():
        ap.error(f"kernel: no such file {a.kernel}")
    if min(a.xblock, a.yblock, a.r0block, a.warps) < 1:
        ap.error("--xblock, --yblock, --r0block and --warps: expected positive integers")
    blocks = {"XBLOCK": a.xblock, "YBLOCK": a.yblock, "R0_BLOCK": a.r0block}
    if a.minimize:
        print(minimize(a.kernel, a.minimize, blocks, a.warps))
        return 0
    import triton
    compile_kernel(a.kernel, blocks, a.warps)
    print(f"compiled with Triton {triton.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
