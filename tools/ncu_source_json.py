"""Nsight Compute's per-SASS-line source page (``ncu -i REPORT --page source --csv --print-source sass``)
summed into JSON, so that a profile's stall reasons and instruction mix can be cited from
benchmarks/results/ like any other measurement.

Per kernel: the warp-stall samples in all (``samples``), their split by stall reason
(``stall_reasons``: the page's ``stall_*`` columns, issued and not issued together), the
instructions executed and samples per opcode (``opcodes``, the opcode without its modifiers and
predicate), the lines with the most samples (``top_lines``, with their largest stall reason) and,
with ``--region NAME@ADDRESS`` (repeatable, addresses as the page prints them, ascending), the
samples and instructions of each address range (from one region's address to the next; lines
before the first go to ``start``)::

    python tools/ncu_source_json.py gemm_source.csv --out benchmarks/results/fp4_gemm_source_<card>_<tag>.json \\
        --card "NVIDIA H100 80GB HBM3" --command "... ncu_gemm_full" --region "K loop@0x7f37abc46a00"
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ncu_details_json import add_record_arguments, write_record  # noqa: E402

_TOP_LINES = 20


def _number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def _opcode(sass: str) -> str:
    """The opcode of a SASS line without predicate and modifiers ("@!P0 BRA 0x..." -> "BRA")."""
    words = sass.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def parse(rows: list[list[str]]) -> list[dict]:
    """[{"kernel", "lines": [{"address", "sass", "samples", "executed", "stalls": {reason: n}}]}]: the
    page's kernels (a "Kernel Name" row, then the header row starting with "Address", then a row per
    SASS line)."""
    kernels: list[dict] = []
    header: list[str] | None = None
    for row in rows:
        if not row:
            continue
        if row[0] == "Kernel Name":
            kernels.append({"kernel": row[1] if len(row) > 1 else "", "lines": []})
            header = None
        elif row[0] == "Address":
            header = row
        elif header is not None and kernels and len(row) >= len(header):
            cell = dict(zip(header, row))
            kernels[-1]["lines"].append({
                "address": cell["Address"], "sass": cell.get("Source", "").strip(),
                "samples": _number(cell.get("Warp Stall Sampling (All Samples)", "0")),
                "executed": _number(cell.get("Instructions Executed", "0")),
                "stalls": {c[len("stall_"):]: _number(v) for c, v in cell.items()
                           if c.startswith("stall_") and not c.endswith("(Not Issued)")}})
    return [k for k in kernels if k["lines"]]


def summarize(lines: list[dict], regions: list[tuple[str, int]]) -> dict:
    """The JSON summary of one kernel's lines (see the module docstring)."""
    total = sum(line["samples"] for line in lines)
    reasons: dict[str, float] = {}
    opcodes: dict[str, dict[str, float]] = {}
    for line in lines:
        for reason, n in line["stalls"].items():
            reasons[reason] = reasons.get(reason, 0.0) + n
        op = opcodes.setdefault(_opcode(line["sass"]), {"executed": 0.0, "samples": 0.0})
        op["executed"] += line["executed"]
        op["samples"] += line["samples"]
    top = sorted(lines, key=lambda line: -line["samples"])[:_TOP_LINES]
    res = {
        "samples": total,
        "executed": sum(line["executed"] for line in lines),
        "stall_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "opcodes": dict(sorted(opcodes.items(), key=lambda kv: -kv[1]["executed"])),
        "top_lines": [{"address": line["address"], "sass": line["sass"], "samples": line["samples"],
                       "stall": max(line["stalls"], key=line["stalls"].get) if line["stalls"] else None}
                      for line in top],
    }
    if regions:
        spans = {name: {"samples": 0.0, "executed": 0.0} for name in ["start", *(name for name, _ in regions)]}
        for line in lines:
            address = int(line["address"], 16)
            name = "start"
            for region, first in regions:
                if address >= first:
                    name = region
            spans[name]["samples"] += line["samples"]
            spans[name]["executed"] += line["executed"]
        res["regions"] = spans
    return res


def _region(text: str) -> tuple[str, int]:
    name, sep, address = text.rpartition("@")
    try:
        if not sep or not name:
            raise ValueError
        return name, int(address, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME@HEXADDRESS (e.g. 'K loop@0x7f37abc46a00'), got {text!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="the CSV of ncu --page source --csv --print-source sass")
    add_record_arguments(ap)
    ap.add_argument("--region", type=_region, action="append", default=[],
                    help="NAME@HEXADDRESS: a range of the SASS from that address to the next region's (repeatable)")
    a = ap.parse_args(argv)
    if not a.source.is_file():
        ap.error(f"source: no such file {a.source}")
    if [first for _, first in a.region] != sorted(first for _, first in a.region):
        ap.error("--region: give the regions in ascending address order")
    with a.source.open(newline="", errors="replace") as f:
        kernels = parse(list(csv.reader(f)))
    if not kernels:
        ap.error(f"source: no kernel with SASS lines found in {a.source} (expected ncu's --page source --csv)")
    write_record(a, "ncu source", a.source,
                 [{"kernel": k["kernel"], **summarize(k["lines"], a.region)} for k in kernels])
    print(f"wrote {a.out}: {len(kernels)} kernel(s), {sum(len(k['lines']) for k in kernels)} SASS lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
