"""Routing modes: "fast" (summaries), "strict" (summaries + full evidence), "auto" (strict when
the query asks for exact wording or precise values, in English or Chinese)."""
from __future__ import annotations

import re

MODES = ("fast", "strict", "auto")
_STRICT_EN = re.compile(r"\b(exact|exactly|precise|precisely|verbatim|word for word|quote|quoted|"
                        r"original text|specific|specifically|in detail|full text|cite|citation|"
                        r"accurate|accurately)\b", re.IGNORECASE)
_STRICT_ZH = ("原文", "具体", "准确", "精确", "确切", "逐字", "引用", "完整", "详细", "原话")


def wants_strict(query: str) -> bool:
    """True when ``query`` contains an English or Chinese strict keyword."""
    return bool(_STRICT_EN.search(query)) or any(k in query for k in _STRICT_ZH)


def resolve_mode(mode: str, query: str) -> str:
    """"fast" or "strict" for ``mode`` in MODES (auto decided by :func:`wants_strict`)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "strict" if wants_strict(query) else "fast"
    return mode
