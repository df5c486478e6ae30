"""Anchors: exact tokens (numbers with units, dates, versioned names, acronyms, definitions,
math symbols) extracted from English and Chinese text.

Anchors are normalised (lower case, no inner spaces or hyphens: "GPT-4" == "gpt 4" -> "gpt4",
"Llama 4" -> "llama4", "3.5 %" -> "3.5%") so a query and a memory that name the same thing share the
token even when written differently. A date gives "YYYY-MM-DD", "YYYY-MM" and "md:MM-DD" from
"2026-01-21", "2026/1/21", "2026年1月21日", "21 January 2026", "Jan 21st, 2026" and the day-first
dotted "21.01.2026" / "21.1.2026" (only dots and a four-digit year: "3.10.2" and "1.5" stay
numbers, and "45.13.2026", no calendar date, stays the number it was); a month of a year
("May 2023", "2023年5月") gives "YYYY-MM", a day without a year ("May 7th", "5月7日") "md:MM-DD". Definition anchors are
stored as "def:<term>" and match a query that mentions the term anywhere.
"""
from __future__ import annotations

import math
import re
from typing import Callable

# ASCII-only boundaries: Python's \b treats CJK characters as word characters ("10M的").
_L = r"(?<![A-Za-z0-9_.])"
_R = r"(?![A-Za-z0-9_])"

_DATE = re.compile(_L + r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})" + _R)
# day-first with dots ("19.01.2024", "1.2.2024"): not followed by ".digit" (then it is a longer
# dotted number, e.g. a version "1.2.2024.5", which stays a number)
_DATE_DMY = re.compile(_L + r"(\d{1,2})\.(\d{1,2})\.(\d{4})(?![A-Za-z0-9_]|\.\d)")
_DATE_ZH = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月(?:\s*(\d{1,2})\s*[日号])?")
_MONTH_DAY_ZH = re.compile(r"(?<![\d年])(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]")
_MONTHS = {name: i + 1 for i, names in enumerate((
    "january jan", "february feb", "march mar", "april apr", "may", "june jun", "july jul",
    "august aug", "september sep sept", "october oct", "november nov", "december dec"))
    for name in names.split()}
_MONTH = r"(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DIGIT = re.compile(r"\d")
_ANY_MONTH = re.compile(r"(?<![A-Za-z])" + _MONTH, re.IGNORECASE)  # every English date form has one
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_DATE_EN = (  # (pattern, order of the groups as y/m/d letters); the first match wins per span
    (re.compile(_L + _DAY + r"\s+(?:of\s+)?" + _MONTH + r",?\s+(\d{4})" + _R, re.IGNORECASE), "dmy"),
    (re.compile(r"(?<![A-Za-z])" + _MONTH + r"\s+" + _DAY + r",?\s+(\d{4})" + _R, re.IGNORECASE), "mdy"),
    (re.compile(r"(?<![A-Za-z])" + _MONTH + r",?\s+(\d{4})" + _R, re.IGNORECASE), "my"),
    (re.compile(_L + _DAY + r"\s+(?:of\s+)?" + _MONTH + r"(?![A-Za-z])", re.IGNORECASE), "dm"),
    (re.compile(r"(?<![A-Za-z])" + _MONTH + r"\s+" + _DAY + _R, re.IGNORECASE), "md"),
)
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


# A speaker field's name words are anchors with this prefix ("spk:kate"), apart from the same name
# written in a text ("kate"): a turn that names a person is usually addressed to them or about
# them, while the turns they wrote carry their facts.
SPEAKER_PREFIX = "spk:"


def date_anchors(year: int | None, month: int, day: int | None) -> set[str]:
    """Anchors of a calendar date: "YYYY-MM-DD", "YYYY-MM" and "md:MM-DD" for a full date; the
    parts that exist for a month of a year ("YYYY-MM") or a day without a year ("md:MM-DD")."""
    if not 1 <= month <= 12 or (day is not None and not 1 <= day <= 31):
        return set()
    out = set()
    if year is not None:
        out.add(f"{year:04d}-{month:02d}")
        if day is not None:
            out.add(f"{year:04d}-{month:02d}-{day:02d}")
    if day is not None:
        out.add(f"md:{month:02d}-{day:02d}")
    return out


def _dates(text: str) -> tuple[set[str], str]:
    """Date anchors of ``text`` (ISO, Chinese and English forms) and the text with them masked."""
    found: set[str] = set()

    def take(pattern: re.Pattern, order: str, masked: str, only_dates: bool = False) -> str:
        def one(m: re.Match) -> str:
            parts = dict(zip(order, m.groups()))
            month = parts["m"]
            month = _MONTHS[month.lower()] if not month.isdigit() else int(month)
            dates = date_anchors(int(parts["y"]) if parts.get("y") else None, month,
                                 int(parts["d"]) if parts.get("d") else None)
            if only_dates and not dates:
                return m.group(0)  # no calendar date: left to the number patterns
            found.update(dates)
            return " "
        return pattern.sub(one, masked)

    if not _DIGIT.search(text):  # every date form has a digit
        return found, text
    # each pattern runs only when the text has what it cannot match without (the cheap checks
    # keep the anchors of a query identical and skip most of the passes over it)
    masked = take(_DATE, "ymd", text)
    if "." in masked:
        masked = take(_DATE_DMY, "dmy", masked, only_dates=True)
    if "年" in masked:
        masked = take(_DATE_ZH, "ymd", masked)
    if "月" in masked:
        masked = take(_MONTH_DAY_ZH, "md", masked)
    if _ANY_MONTH.search(masked):
        for pattern, order in _DATE_EN:
            masked = take(pattern, order, masked)
    return found, masked


def _norm(token: str) -> str:
    return re.sub(r"[\s\-_]+", "", token.lower())


def extract_anchors(text: str) -> frozenset[str]:
    """Anchors of ``text`` as a frozenset of normalised strings (see module docstring)."""
    found, dateless = _dates(text)
    for name, ver in _VERSIONED.findall(dateless):
        if name.lower() not in STOPWORDS and name.lower() not in _MONTHS:
            found.add(_norm(name + ver))
    masked = _VERSIONED.sub(" ", dateless)
    for num, attached, spaced, cjk in _NUMBER.findall(masked):
        found.add(_norm(num.replace(",", "") + (attached or spaced or cjk)))
    for ver in _VERSION.findall(dateless):
        found.add(_norm(ver))
    for word in _WORD.findall(dateless):
        low = word.lower()
        if low in STOPWORDS or len(word) < 2:
            continue
        found.add(low)
    found.update(_MATH_SYMBOLS.findall(text))
    if "=" in text or "^" in text or "O(" in text:  # what every formula has
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
    for term in _DEF_ZH.findall(text) if "是" in text or "定义为" in text else ():  # its verbs
        term = term.strip()
        if term and term.lower() not in STOPWORDS and term not in ("这", "那", "它", "这个", "那个"):
            terms.append(term.lower())
    return terms


def anchor_weight(df: int, n: int) -> float:
    """Weight in (0, 1] of an anchor that ``df`` of ``n`` nodes carry: ln(1 + n / df) / ln(1 + n),
    1 for an anchor one node (or none) carries, near 0 for one most nodes carry."""
    return math.log1p(n / max(1, df)) / math.log1p(max(n, 1))


def anchor_overlap(query_anchors: frozenset[str], query_text_lower: str, node_anchors: frozenset[str],
                   weight: Callable[[str], float] | None = None, count: int | None = None) -> float:
    """Score in [0, 1]: the weights of the query's anchors the node carries, summed, over the
    number of query anchors; a node's definition anchor counts as a match when the query
    mentions the defined term. ``weight`` (anchor -> weight, e.g. :func:`anchor_weight` of its
    document frequency) makes rare anchors (a date, a price, a version) count more than common
    ones (a speaker's name in a two-person chat); without it every anchor weighs 1. ``count``:
    :func:`query_anchor_count` of ``query_anchors`` when the caller has it (one query, many nodes)."""
    if count is None:
        count = query_anchor_count(query_anchors)
    elif count < 1:
        raise ValueError(f"count must be >= 1 (query_anchor_count of the query's anchors), got {count!r}")
    matched = 0.0
    for anchor in query_anchors & node_anchors:
        matched += 1.0 if weight is None else weight(anchor)
    for anchor in node_anchors:
        if anchor.startswith("def:") and anchor[4:] in query_text_lower and anchor not in query_anchors:
            matched += 1.0 if weight is None else weight(anchor)
    return min(1.0, matched / count)


def query_anchor_count(query_anchors: frozenset[str]) -> int:
    """The denominator of :func:`anchor_overlap`: the query's anchors that are not definitions nor
    the speaker forms of its words (:func:`with_speaker_forms`), at least 1."""
    return max(1, sum(1 for a in query_anchors if not a.startswith(("def:", SPEAKER_PREFIX))))


def is_word_anchor(anchor: str) -> bool:
    """Whether ``anchor`` is a capitalised word of the text (a name, a place, an acronym, a
    sentence's first word): ASCII letters only, unlike numbers, dates, versions, formulas,
    definitions and speaker anchors."""
    return anchor.isascii() and anchor.isalpha()


def with_speaker_forms(query_anchors: frozenset[str]) -> frozenset[str]:
    """A query's anchors plus the speaker anchor of each of its words, so that a question naming
    a person ("What are Kate's hobbies?") matches the turns Kate wrote (speaker "Kate")."""
    return query_anchors | {SPEAKER_PREFIX + a for a in query_anchors if is_word_anchor(a)}
