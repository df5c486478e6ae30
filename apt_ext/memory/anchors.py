"""Anchors: exact tokens (numbers with units, dates, versioned names, acronyms, definitions,
math symbols) extracted from English and Chinese text.

Anchors are normalised (lower case, no inner spaces or hyphens: "GPT-4" == "gpt 4" -> "gpt4",
"Llama 4" -> "llama4", "3.5 %" -> "3.5%", "2026年1月21日" -> "2026-01-21") so a query and a memory
that name the same thing share the token even when written differently. Definition anchors are
stored as "def:<term>" and match a query that mentions the term anywhere.
"""
from __future__ import annotations

import re

# ASCII-only boundaries: Python's \b treats CJK characters as word characters ("10M的").
_L = r"(?<![A-Za-z0-9_.])"
_R = r"(?![A-Za-z0-9_])"

_DATE = re.compile(_L + r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})" + _R)
_DATE_ZH = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月(?:\s*(\d{1,2})\s*[日号])?")
_UNITS = ("%|‰|ms|us|µs|ns|s|sec|min|h|hz|khz|mhz|ghz|b|kb|mb|gb|tb|pb|k|m|bn|t|x|w|kw|v|"
          "km|cm|mm|kg|g|fps|tflops|gflops|tok|tokens|token|bit|bits|byte|bytes|params|"
          "million|billion|thousand|percent|usd|eur|rmb|yuan|dollars")
_NUMBER = re.compile(_L + r"(\d+(?:[.,]\d+)*)(?:(%|‰|[A-Za-z]{1,3}(?![A-Za-z]))|\s*(" + _UNITS
                     + r")(?![A-Za-z])|\s*([万亿千百十]+))?", re.IGNORECASE)
_VERSIONED = re.compile(_L + r"([A-Z][A-Za-z]*(?:[- ]?[A-Z][A-Za-z]*)?)[- ]?(v?\d+(?:\.\d+)*[a-z]?)" + _R)
_VERSION = re.compile(_L + r"(v\d+(?:\.\d+)+|v\d+)" + _R)
_WORD = re.compile(_L + r"([A-Z][A-Za-z]*)" + r"(?![A-Za-z0-9])")
_MATH_SYMBOLS = re.compile(r"[∑∫∮√∞∂∇≈≠≤≥±×÷∈∉⊂⊆∪∩∀∃πλμσθαβγδεΩΔΣΠ]")
_FORMULA = re.compile(r"(?:O\([^()]{1,24}\)|[A-Za-z][A-Za-z0-9_]*\s*(?:=|\^)\s*[A-Za-z0-9_^+\-*/().]+)")
_DEF_EN = re.compile(r"(?:^|[.;!?]\s+)(?:the\s+|an?\s+)?([A-Za-z][A-Za-z0-9\- ]{0,40}?)\s+"
                     r"(?:is|are|refers to|means|stands for|is defined as)\s+(?:a|an|the)?\s*\w",
                     re.IGNORECASE)
_DEF_ZH = re.compile(r"([A-Za-z0-9\-\u4e00-\u9fff ]{1,12}?)\s*(?:是指|指的是|定义为|是一种|是一个|是)"
                     r"(?!哪|什么|谁|多少|否|不是)")

STOPWORDS = frozenset("""a an the and or but if then else when while of in on at to for from by with
about as into over under is are was were be been being do does did has have had this that these
those it its which what who whom whose where why how i you he she we they me him her us them my your
his our their not no yes can could should would may might will shall must also there here some any
all each every both few more most other such only own same so than too very just please tell show
give list find which what's who's does did hi hello hey ok okay thanks thank""".split())


def _norm(token: str) -> str:
    return re.sub(r"[\s\-_]+", "", token.lower())


def extract_anchors(text: str) -> frozenset[str]:
    """Anchors of ``text`` as a frozenset of normalised strings (see module docstring)."""
    found: set[str] = set()
    for y, m, d in _DATE.findall(text):
        found.add(f"{int(y):04d}-{int(m):02d}-{int(d):02d}")
    for y, m, d in _DATE_ZH.findall(text):
        found.add(f"{int(y):04d}-{int(m):02d}" + (f"-{int(d):02d}" if d else ""))
    for name, ver in _VERSIONED.findall(text):
        if name.lower() not in STOPWORDS:
            found.add(_norm(name + ver))
    masked = _VERSIONED.sub(" ", _DATE_ZH.sub(" ", _DATE.sub(" ", text)))
    for num, attached, spaced, cjk in _NUMBER.findall(masked):
        found.add(_norm(num.replace(",", "") + (attached or spaced or cjk)))
    for ver in _VERSION.findall(text):
        found.add(_norm(ver))
    for word in _WORD.findall(text):
        low = word.lower()
        if low in STOPWORDS or len(word) < 2:
            continue
        found.add(low)
    found.update(_MATH_SYMBOLS.findall(text))
    for formula in _FORMULA.findall(text):
        found.add(re.sub(r"\s+", "", formula.lower()))
    for term in definitions(text):
        found.add("def:" + term)
    return frozenset(found)


def definitions(text: str) -> list[str]:
    """Terms that ``text`` defines ("RoPE is ...", "RoPE refers to ...", "旋转位置编码是指 ...")."""
    terms = []
    for term in _DEF_EN.findall(text):
        words = [w for w in term.strip().split() if w.lower() not in STOPWORDS]
        if words and len(words) <= 5:
            terms.append(" ".join(words).lower())
    for term in _DEF_ZH.findall(text):
        term = term.strip()
        if term and term.lower() not in STOPWORDS and term not in ("这", "那", "它", "这个", "那个"):
            terms.append(term.lower())
    return terms


def anchor_overlap(query_anchors: frozenset[str], query_text_lower: str,
                   node_anchors: frozenset[str]) -> float:
    """Fraction in [0, 1] of the query's anchors the node carries; a node's definition anchor
    counts as one match when the query mentions the defined term."""
    matches = len(query_anchors & node_anchors)
    for anchor in node_anchors:
        if anchor.startswith("def:") and anchor[4:] in query_text_lower and anchor not in query_anchors:
            matches += 1
    denom = max(1, len({a for a in query_anchors if not a.startswith("def:")}))
    return min(1.0, matches / denom)
