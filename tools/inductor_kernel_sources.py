"""Which model operations each of inductor's kernels computes, read from its generated code.

A GPU profile names inductor's kernels (``triton_per_fused_mul_sum_0``) but not what they compute,
and the numbers in the names restart in every compiled graph (forward, backward, each variant).
Inductor's wrapper code says it: before each launch, a comment lists the graph's nodes the
kernel covers ("Topologically Sorted Source Nodes") and their ATen ops. This reads those comments
from the wrapper modules that a run left in its inductor cache (``gpu_session.sh`` stage ``model``
with ``APT_MODEL_CODE=1`` keeps them in ``$OUT/inductor_code.tgz``) and prints, for each kernel
asked for, every launch of that name with its nodes, ops, estimated traffic, number of loads
and the module it is in. A profile's kernel names are cut at 120 characters
(benchmarks/model_throughput.py); such a name matches every kernel it begins::

    python tools/inductor_kernel_sources.py --code inductor_code.tgz --kernel triton_per_fused_mul_sum_0
    python tools/inductor_kernel_sources.py --code inductor_code.tgz \\
        --profile benchmarks/results/model_throughput_s31_graphs.json --variant left-spin --top 20
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from inductor_cuda_kernels import kernel_gb, kernel_loads, wrapper_kernels

_NODES = re.compile(r"#\s*Topologically Sorted Source Nodes:\s*\[(.*?)\],\s*Original ATen:\s*\[(.*?)\]")
# a launch in the wrapper's call(); each kernel's own benchmark harness calls .run(*args, ...)
_LAUNCH = re.compile(r"\b((?:triton|cpp)_\w+?)\.run\((?!\*args)")
PROFILE_NAME_CHARS = 120  # benchmarks/model_throughput.py keeps this much of each kernel's name


@dataclass
class Launch:
    """One launch of a kernel in a wrapper module: the graph nodes and ATen ops it covers,
    inductor's estimate of the bytes it moves and its count of tl.load calls (None where the
    module does not say; many loads in one reduction kernel spill registers)."""
    kernel: str
    module: str
    nodes: list[str]
    aten: list[str]
    traffic_mb: float | None
    loads: int | None = None


def _split(names: str) -> list[str]:
    return [n.strip() for n in names.split(",") if n.strip()]


def launches(name: str, text: str) -> list[Launch]:
    """Every kernel launch in the wrapper module ``text`` (file ``name``), with the source-nodes
    comment nearest above it (a launch without one gets empty lists)."""
    sources = wrapper_kernels(text)
    traffic = {kernel: kernel_gb(source) * 1e3 for kernel, source in sources if "kernel_num_gb" in source}
    loads = {kernel: kernel_loads(source) for kernel, source in sources}
    out: list[Launch] = []
    nodes: list[str] = []
    aten: list[str] = []
    for line in text.splitlines():
        found = _NODES.search(line)
        if found:
            nodes, aten = _split(found.group(1)), _split(found.group(2))
            continue
        for kernel in _LAUNCH.findall(line):
            out.append(Launch(kernel, name, nodes, aten, traffic.get(kernel), loads.get(kernel)))
            nodes, aten = [], []
    return out


def read_code(path: Path) -> list[Launch]:
    """The launches of every wrapper module under ``path``: a folder (searched recursively for
    .py files) or a .tgz/.tar.gz of one."""
    if not path.exists():
        raise FileNotFoundError(f"code: {path} does not exist")
    files: list[tuple[str, str]] = []
    if path.is_dir():
        files = [(str(p.relative_to(path)), p.read_text(errors="replace")) for p in sorted(path.rglob("*.py"))]
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(".py"):
                    data = tar.extractfile(member)
                    if data is not None:
                        files.append((member.name, data.read().decode(errors="replace")))
    else:
        raise ValueError(f"code: expected a folder or a tar archive, got {path}")
    return [launch for name, text in files if "def call(" in text for launch in launches(name, text)]


def profile_kernels(profile: Path, variant: str, top: int) -> list[tuple[str, float, float]]:
    """(kernel, ms per step, calls per step) of ``variant``'s top kernels in a
    benchmarks/model_throughput.py JSON written with --profile (inductor's kernels only)."""
    rows = json.loads(profile.read_text()).get("rows", [])
    row = next((r for r in rows if r.get("variant") == variant and r.get("top_kernels")), None)
    if row is None:
        raise ValueError(f"variant: {profile} has no profiled row {variant!r} "
                         f"(rows: {sorted({r.get('variant') for r in rows})})")
    kernels = [(k["name"], k["ms_per_step"], k["calls_per_step"]) for k in row["top_kernels"]
               if k["name"].startswith(("triton_", "cpp_"))]
    return kernels[:top]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code", type=Path, required=True, help="inductor cache folder or a .tgz of its wrapper modules")
    ap.add_argument("--kernel", action="append", default=[], help="a kernel name (repeatable)")
    ap.add_argument("--profile", type=Path, help="a model_throughput JSON with top_kernels")
    ap.add_argument("--variant", default="left-spin", help="the profiled row (with --profile)")
    ap.add_argument("--top", type=int, default=30, help="how many of the profile's kernels (with --profile)")
    a = ap.parse_args(argv)
    if a.top < 1:
        ap.error(f"--top: expected a positive number, got {a.top}")
    if not a.kernel and a.profile is None:
        ap.error("--kernel or --profile: name the kernels to look up")
    wanted: list[tuple[str, str]] = [(k, "") for k in a.kernel]
    if a.profile is not None:
        wanted += [(k, f"{ms:.3f} ms/step, {calls:g} calls") for k, ms, calls in profile_kernels(a.profile, a.variant, a.top)]
    by_name: dict[str, list[Launch]] = {}
    for launch in read_code(a.code):
        by_name.setdefault(launch.kernel, []).append(launch)
    for kernel, timing in wanted:
        found = by_name.get(kernel, [])
        if not found and len(kernel) >= PROFILE_NAME_CHARS:  # a profile's cut name: every kernel it begins
            found = [launch for name, group in by_name.items() if name.startswith(kernel) for launch in group]
        print(f"{kernel}{'  (' + timing + ')' if timing else ''}: {len(found)} launch(es) in the code")
        seen = set()
        for launch in found:
            key = (launch.module, launch.kernel, tuple(launch.nodes))
            if key in seen:
                continue
            seen.add(key)
            mb = f"{launch.traffic_mb:.1f} MB" if launch.traffic_mb is not None else "traffic ?"
            n_loads = f"{launch.loads} loads" if launch.loads is not None else "loads ?"
            name = f"  {launch.kernel}" if launch.kernel != kernel else ""
            print(f"    {launch.module}{name}  {mb}, {n_loads}\n      nodes: {', '.join(launch.nodes) or '?'}\n"
                  f"      aten:  {', '.join(launch.aten) or '?'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
