"""Prints what the installed apt_ext build compiled and what runs here, in a few lines (the end of
tools/setup_env.sh): the torch it was built against, CPU and CUDA kernels, SIMD, the pager's
io_uring and checksum, and per op the backends usable on this machine. Exits 1 if _C did not load.

    python tools/build_summary.py
"""
from __future__ import annotations

import sys


def yes_no(v: object) -> str:
    return "yes" if v else "no"


def summary_lines() -> list[str]:
    """The summary as lines of text (imports apt_ext; raises ImportError if it cannot)."""
    import torch

    import apt_ext
    from apt_ext import _native

    caps = apt_ext.capabilities()
    if not caps["native_loaded"]:
        return [f"apt_ext._C did not load: {caps['native_error']}"]
    info = dict(caps["build"])
    built = _native._build_config.TORCH_VERSION if _native._build_config is not None else "?"
    cuda = (f"yes ({info.get('cuda_archs') or 'archs not recorded'})" if info.pop("cuda", False)
            else f"no ({'torch has no CUDA' if torch.version.cuda is None else 'nvcc not found or CUDA disabled'})")
    info.pop("cuda_archs", None)
    lines = [f"built against torch {built} (running {torch.__version__}); CUDA kernels: {cuda}"]
    lines.append("build flags: " + ", ".join(f"{k}={yes_no(v) if isinstance(v, bool) else v}"
                                            for k, v in sorted(info.items())))
    lines.append(f"VGPU checksum: {getattr(_native._C, 'vgpu_checksum', '?')}")
    usable = {b: sorted(op for op, o in caps["ops"].items() if o[b]["usable"]) for b in ("cpu", "cuda", "triton")}
    n = len(caps["ops"])
    lines.append("ops usable here: " + "; ".join(f"{b} {len(ops)}/{n}" for b, ops in usable.items())
                 + f" (triton: {caps['triton']['reason']})")
    return lines


def main() -> int:
    try:
        lines = summary_lines()
    except ImportError as exc:
        print(f"apt_ext does not import: {exc}")
        return 1
    print("\n".join(lines))
    return 0 if not lines[0].startswith("apt_ext._C did not load") else 1


if __name__ == "__main__":
    sys.exit(main())
