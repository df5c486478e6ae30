"""Nsight Compute's details page (``ncu -i REPORT --page details``) as JSON, so that its figures
can be cited from benchmarks/results/ like any other measurement.

Each profiled kernel's metric tables become ``{name: {"unit": ..., "value": ...}}`` (the first of
a repeated name, as the page lists sections top to bottom; values as numbers where they are
numbers, thousands separators removed)::

    python tools/ncu_details_json.py gemm_details.txt --out benchmarks/results/fp4_gemm_ncu_<card>_<tag>.json \\
        --card "NVIDIA H200" --command "APT_FP4_GEMM=... bash benchmarks/gpu_session.sh ncu_gemm_full"
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

_DASHES = re.compile(r"^\s*-+(?: -+)+\s*$")
# a kernel's heading: the demangled name with its grid and block, "(132, 1, 1)x(256, 1, 1), Context 1, ..."
_KERNEL = re.compile(r"^\s+(\S.*\(\d+, \d+, \d+\)x\(\d+, \d+, \d+\)), Context \d+")


def _number(text: str) -> float | str:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return text


def parse(text: str) -> list[dict]:
    """[{"kernel": heading, "metrics": {name: {"unit", "value"}}}] of every kernel on the page."""
    kernels: list[dict] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = _KERNEL.match(line)
        if heading:
            kernels.append({"kernel": heading.group(1), "metrics": {}})
        elif _DASHES.match(line) and i + 2 < len(lines) and "Metric Name" in lines[i + 1] and kernels:
            name_end = re.search(r"-+", line).end()  # the metric-name column's dashes
            i += 3  # the dashes, the header, the dashes again
            while i < len(lines) and not _DASHES.match(lines[i]):
                row = lines[i]
                # the value column is right-aligned and may start left of its dashes: split at the
                # name column's end; the last word is the value, what lies between is the unit
                name = row[:name_end].strip()
                rest = row[name_end:].split()
                if name and rest:
                    unit = " ".join(rest[:-1])
                    kernels[-1]["metrics"].setdefault(name, {"unit": unit, "value": _number(rest[-1])})
                i += 1
        i += 1
    return kernels


def add_record_arguments(ap: argparse.ArgumentParser) -> None:
    """--out, --card, --command and --torch: where the JSON goes and what it records of the run
    (shared with tools/ncu_source_json.py)."""
    ap.add_argument("--out", type=Path, required=True, help="the JSON to write")
    ap.add_argument("--card", required=True, help="the GPU's name, as torch.cuda.get_device_name() gives it")
    ap.add_argument("--command", required=True, help="the command that profiled (recorded in the JSON)")
    ap.add_argument("--torch", default=None, help="torch version of the profiled run")


def write_record(a: argparse.Namespace, benchmark: str, source: Path, kernels: list[dict]) -> None:
    """Writes {"benchmark", "card", "torch", "date" (now, UTC), "command", "source", "kernels"} to a.out."""
    res = {"benchmark": benchmark, "card": a.card, "torch": a.torch,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "command": a.command, "source": source.name, "kernels": kernels}
    a.out.write_text(json.dumps(res, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("details", type=Path, help="the text of ncu --page details")
    add_record_arguments(ap)
    a = ap.parse_args(argv)
    if not a.details.is_file():
        ap.error(f"details: no such file {a.details}")
    kernels = parse(a.details.read_text(errors="replace"))
    if not kernels:
        ap.error(f"details: no profiled kernel found in {a.details} (expected ncu's --page details text)")
    write_record(a, "ncu details", a.details, kernels)
    print(f"wrote {a.out}: {len(kernels)} kernel(s), {sum(len(k['metrics']) for k in kernels)} metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
