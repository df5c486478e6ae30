"""One-line summaries that never rewrite the user's characters.

A summary is the leading sentences of the text, copied character for character: an exact
substring of the text (leading and trailing whitespace left out). Only when the first sentences
are longer than the limit is the copy cut (at a space when one is near) and "…" appended.

Sentence ends are found without touching the text: CJK terminators (。！？；…) end a sentence
where they stand; ASCII ".!?;" only when whitespace or the end of the text follows, so decimals
(3.5), versions (2.14.1), currency ($5.1M), URLs (https://a.b/c.d) and e-mail addresses never end
one; a "." after a known abbreviation (Dr., e.g., U.S.) or a single-letter initial (J. K.) does not
end one either. A line break always ends a sentence.
"""
from __future__ import annotations

import re

_ABBREVIATIONS = frozenset("""mr mrs ms dr prof sr jr st vs etc e.g i.e eg ie a.m p.m am pm no nos
fig figs approx inc ltd co corp dept est jan feb mar apr jun jul aug sep sept oct nov dec mt ft
u.s u.k e.u cf al ca vol ed eds""".split())
_CJK_END = "。！？；…"
_CLOSERS = "\"'”’)]}」』）】》"
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)\.$")
_MIN_CHARS = 40  # leading sentences shorter than this ("Hi!") are extended with the next one


def _is_abbreviation(text: str, dot: int) -> bool:
    """True when the "." at ``text[dot]`` closes an abbreviation or an initial."""
    match = _WORD_BEFORE.search(text[max(0, dot - 12):dot + 1])
    if match is None:
        return False
    word = match.group(1)
    return word.lower().rstrip(".") in _ABBREVIATIONS or (len(word) == 1 and word.isupper())


def sentence_ends(text: str) -> list[int]:
    """End offsets (exclusive) of the sentences of ``text``: ``text[:end]`` is whole sentences."""
    ends = []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        end = None
        if ch == "\n":
            end = i
        elif ch in _CJK_END:
            end = i + 1
        elif ch in ".!?;":
            j = i + 1
            while j < n and text[j] in ".!?":
                j += 1
            k = j
            while k < n and text[k] in _CLOSERS:
                k += 1
            if (k == n or text[k].isspace()) and not (ch == "." and j == i + 1 and _is_abbreviation(text, i)):
                end = k
            i = j - 1
        if end is not None:
            while end < n and text[end] in _CLOSERS:
                end += 1
            ends.append(end)
        i += 1
    if not ends or ends[-1] < n:
        ends.append(n)
    return ends


def summarize(text: str, limit: int) -> str:
    """The leading sentences of ``text`` (at least 40 characters when the text has them), copied
    exactly; at most ``limit`` characters, cut with a trailing "…" only when longer."""
    start = len(text) - len(text.lstrip())
    body = text
    chosen = len(text)
    for end in sentence_ends(text):
        if len(body[start:end].strip()) >= _MIN_CHARS:
            chosen = end
            break
    summary = body[start:chosen].rstrip()
    if len(summary) <= limit:
        return summary
    cut = summary[:limit - 1]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space >= (limit * 2) // 3:
        cut = cut[:space]
    return cut.rstrip() + "…"
