"""Every measured figure quoted in README.md, docs/*.md and benchmarks/RESULTS.md must cite a JSON
under benchmarks/results/ that holds it. Prints each figure that does not and exits 1.

    python tools/check_numbers.py [FILE.md ...]

The convention (also in docs/benchmarks.md):
- A *unit* of text is a paragraph, a list item, a table row or a heading; fenced code blocks,
  inline code and link targets are not read.
- A *figure* is a number with a measurement unit (ms, µs, s, GB/s, MB/s, tokens/s, %, or a
  ratio like 2.4x), and, in a unit that talks about a measurement (p50, cosine, recall, error,
  loss, ...), any decimal number. A number right after >=, <=, ≥, ≤, "at least" or "at most" is
  a target, not a figure. Version numbers (2.13.0) are not figures.
- A unit's *sources* are its links to benchmarks/results/*.json, plus the links of a paragraph
  starting with "Source" in the same heading section.
- A figure is sourced when one of its sources holds a number that, printed at the figure's
  precision, gives the figure: the number itself scaled by a power of 1000, by 100 or by 2^-20
  / 2^-30 (bytes to MiB / GiB), or, for a ratio (x, %, a bare decimal), the ratio of two numbers
  of the same kind (two times, two bandwidths, two byte counts, or two values of one key), times
  1 or 100.
- A unit that says "unsourced:" (with the reason) quotes a figure without JSON on purpose:
  it is not checked. Use it sparingly, for development notes.
"""
from __future__ import annotations

import bisect
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILES = ("README.md", "docs/*.md", "benchmarks/RESULTS.md")
UNSOURCED = "unsourced:"

_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_LEFT = r"(?<![\w.,/])"               # not part of a word, a version or a path
_RIGHT = r"(?![.,]?\d)"               # not followed by more digits (versions, 1,000 split)
_RANGE = rf"{_LEFT}(?P<a>{_NUM}){_RIGHT}(?:\s*[-–]\s*(?P<b>{_NUM}){_RIGHT})?"
UNIT_FIGURE = re.compile(_RANGE + r"(?:\s?(?P<u>ms|µs|us|GB/s|GiB/s|MB/s|tokens/s|%)(?![\w/])"
                                   r"|\s(?P<s>s)(?![\w/])|(?P<x>x)(?![\w]))")
DECIMAL = re.compile(rf"{_LEFT}(?P<a>\d+\.\d+){_RIGHT}")
TARGET = re.compile(rf"(?:>=|<=|≥|≤|\bat least|\bat most)\s*(?:{_NUM})(?:\s*[-–]\s*(?:{_NUM}))?\s*"
                    r"(?:ms|µs|s|GB/s|MB/s|tokens/s|%|x)?")
MEASURE_WORDS = re.compile(r"\b(p50|p95|cosine|recall|error|err|loss|agreement|hit rate|latency|throughput|"
                           r"faster|slower|speed-up|measured|bandwidth)\b", re.I)
JSON_LINK = re.compile(r"\]\(([^)\s]*benchmarks/results/[^)\s]+\.json|[^)\s]*results/[^)\s]+\.json)\)")


@dataclass
class Unit:
    path: Path
    line: int
    text: str
    sources: list[Path] = field(default_factory=list)


@dataclass
class Finding:
    unit: Unit
    figure: str
    why: str

    def __str__(self) -> str:
        where = f"{self.unit.path.relative_to(ROOT)}:{self.unit.line}"
        return f"{where}: {self.figure!r} {self.why}\n    {self.unit.text[:160]}"


# ---- markdown -> units ----------------------------------------------------------------------
def _links(text: str, base: Path) -> list[Path]:
    return [(base / m).resolve() for m in JSON_LINK.findall(text)]


def units_of(path: Path) -> list[Unit]:
    """Paragraphs, list items, table rows and headings of a markdown file, with their sources."""
    units: list[Unit] = []
    section_sources: list[Path] = []
    section_start = 0
    current: Unit | None = None
    in_code = False

    def close() -> None:
        nonlocal current
        if current is not None:
            units.append(current)
            if current.text.lower().startswith("source"):
                section_sources.extend(_links(current.text, path.parent))
            current = None

    for i, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.rstrip()
        if line.lstrip().startswith("```"):
            in_code = not in_code
            close()
            continue
        if in_code:
            continue
        stripped = line.strip()
        if stripped.startswith("#"):
            close()
            for u in units[section_start:]:
                u.sources += section_sources
            section_sources, section_start = [], len(units)
            units.append(Unit(path, i, stripped))
            continue
        if not stripped:
            close()
        elif stripped.startswith("|") or re.match(r"([-*]|\d+\.)\s", stripped):
            close()
            current = Unit(path, i, stripped)
            if stripped.startswith("|"):
                close()
        elif current is None:
            current = Unit(path, i, stripped)
        else:
            current.text += " " + stripped
    close()
    for u in units[section_start:]:
        u.sources += section_sources
    for u in units:
        u.sources = _links(u.text, path.parent) + u.sources
    return units


def _clean(text: str) -> str:
    text = re.sub(r"<!--.*?-->", " ", text)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return TARGET.sub(" ", text)


def figures_of(text: str) -> list[tuple[str, bool]]:
    """The figures quoted in one unit of text: (as printed, may be a ratio). Ratios are the
    figures with x or % and the bare decimals; times, bandwidths and sizes are not."""
    text = _clean(text)
    found: list[tuple[int, str, bool]] = []
    taken: set[int] = set()
    for m in UNIT_FIGURE.finditer(text):
        is_ratio = bool(m.group("x")) or m.group("u") == "%"
        for g in ("a", "b"):
            if m.group(g):
                found.append((m.start(g), m.group(g), is_ratio))
                taken.add(m.start(g))
    if MEASURE_WORDS.search(text):
        found += [(m.start("a"), m.group("a"), True) for m in DECIMAL.finditer(text) if m.start("a") not in taken]
    return [(f, r) for _, f, r in sorted(found)]


# ---- JSON values ----------------------------------------------------------------------------
def _kind(key: str) -> tuple[str, float]:
    """(kind, factor to a common unit) of a JSON key: times to seconds, bandwidths, bytes."""
    k = key.lower()
    if k == "ms" or k.endswith("_ms") or "_ms_" in k:
        return "time", 1e-3
    if k.endswith("_s") or k in ("s", "seconds"):
        return "time", 1.0
    if "gbs" in k or "gbps" in k:
        return "bandwidth", 1.0
    if "bytes" in k:
        return "bytes", 1.0
    return "key:" + k, 1.0


def _leaves(d, key: str = "") -> list[tuple[str, float]]:
    if isinstance(d, dict):
        return [leaf for k, v in d.items() for leaf in _leaves(v, str(k))]
    if isinstance(d, list):
        return [leaf for v in d for leaf in _leaves(v, key)]
    if isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d):
        return [(key, float(d))]
    return []


class Values:
    """The numbers of one JSON file, grouped by kind, for matching printed figures."""

    SCALES = (1.0, 1e3, 1e-3, 1e6, 1e-6, 1e9, 1e-9, 100.0, 2.0**-20, 2.0**-30)

    def __init__(self, data) -> None:
        self.flat: list[float] = []
        kinds: dict[str, list[float]] = {}
        for key, v in _leaves(data):
            kind, factor = _kind(key)
            self.flat.append(v)
            kinds.setdefault(kind, []).append(v * factor)
        self.flat.sort()
        self.kinds = {k: sorted(x for x in vs if x > 0) for k, vs in kinds.items()}

    def _any_in(self, values: list[float], lo: float, hi: float) -> bool:
        i = bisect.bisect_left(values, lo)
        return i < len(values) and values[i] <= hi

    def holds(self, lo: float, hi: float, ratios: bool) -> bool:
        """True when a value, a scaled value or (``ratios``) a same-kind ratio is in [lo, hi]."""
        if any(self._any_in(self.flat, lo / s, hi / s) for s in self.SCALES):
            return True
        if not ratios:
            return False
        for vals in self.kinds.values():
            for mult in (1.0, 100.0):
                for a in vals:  # a / b in [lo, hi]  <=>  b in [a*mult/hi, a*mult/lo]
                    if lo > 0 and self._any_in(vals, a * mult / hi, a * mult / lo):
                        return True
        return False


def _interval(figure: str) -> tuple[float, float]:
    text = figure.replace(",", "")
    q = float(text)
    decimals = len(text.split(".")[1]) if "." in text else 0
    half = 0.5 * 10.0**-decimals
    return q - half - 1e-9 * abs(q), q + half + 1e-9 * abs(q)


# ---- the check ------------------------------------------------------------------------------
def check(files: list[Path]) -> tuple[list[Finding], int]:
    """(findings, number of figures checked) for markdown ``files``."""
    cache: dict[Path, Values | None] = {}
    findings: list[Finding] = []
    checked = 0
    for path in files:
        for unit in units_of(path):
            figs = figures_of(unit.text)
            if not figs or UNSOURCED in unit.text.lower():
                continue
            sources = []
            for src in dict.fromkeys(unit.sources):
                if src not in cache:
                    cache[src] = Values(json.loads(src.read_text())) if src.is_file() else None
                if cache[src] is None:
                    findings.append(Finding(unit, str(src), "is cited but does not exist"))
                else:
                    sources.append(cache[src])
            for fig, is_ratio in figs:
                checked += 1
                if not unit.sources:
                    findings.append(Finding(unit, fig, "cites no JSON under benchmarks/results/"))
                elif sources and not any(v.holds(*_interval(fig), ratios=is_ratio) for v in sources):
                    findings.append(Finding(unit, fig, "is in none of the cited JSON files"))
    return findings, checked


def default_files() -> list[Path]:
    return sorted({p for pattern in DEFAULT_FILES for p in ROOT.glob(pattern)})


def main(argv: list[str]) -> int:
    files = [Path(a).resolve() for a in argv] or default_files()
    findings, checked = check(files)
    for f in findings:
        print(f)
    print(f"check_numbers: {checked} figures in {len(files)} files, {len(findings)} without a source")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
