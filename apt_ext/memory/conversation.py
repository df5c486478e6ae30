"""Conversation fields of a memory: who said it (``speaker``) and when (``timestamp``).

Both are validated here and turned into anchors, so a query that names the person or the date
("What did Maria say on 7 May 2023?") prefers the nodes that carry them: the speaker's name
words (lower case, prefixed ``spk:``, apart from names written in a text; a query's name words
match them through :func:`apt_ext.memory.anchors.with_speaker_forms`) and the day as
"2023-05-07", "2023-05" and "md:05-07" (the anchors that
:func:`apt_ext.memory.anchors.extract_anchors` gives for dates written in a query).
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from apt_ext.memory.anchors import SPEAKER_PREFIX, STOPWORDS, date_anchors

_NAME_WORD = re.compile(r"[^\W_]+")


def check_speaker(speaker: Any) -> str | None:
    """``speaker`` (1-128 characters, no NUL) or None; TypeError/ValueError otherwise."""
    if speaker is None:
        return None
    if not isinstance(speaker, str):
        raise TypeError(f"speaker must be a str or None, got {type(speaker).__name__}")
    if not speaker.strip() or len(speaker) > 128 or "\x00" in speaker:
        raise ValueError(f"speaker must be 1-128 characters without NUL, got {speaker!r}")
    return speaker


def to_timestamp(value: Any) -> float | None:
    """Unix seconds (float) of ``value``: int/float seconds, a ``datetime`` (naive means UTC), a
    ``date`` (midnight UTC) or an ISO-8601 string ("2023-05-07", "2023-05-07T13:56:00+02:00");
    None stays None. TypeError/ValueError otherwise.

    Naive times are read as UTC whatever the machine's time zone, and :func:`field_anchors` takes
    the UTC day, so a naive local time (a chat log's "20.01.2024, 03:07") anchors the day written
    (2024-01-20), never a day shifted by the process's time zone. A time with an offset anchors its
    UTC day ("2023-05-07T01:00:00+02:00" gives 2023-05-06): pass naive local times to anchor the
    caller's local day."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("timestamp must be Unix seconds, a datetime, a date or an ISO-8601 string, got bool")
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"timestamp must be finite, got {value}")
        return float(value)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"timestamp string must be ISO-8601 (e.g. 2023-05-07T13:56:00), got {value!r}") from exc
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).timestamp()
    raise TypeError(f"timestamp must be Unix seconds, a datetime, a date or an ISO-8601 string, "
                    f"got {type(value).__name__}")


def field_anchors(speaker: str | None, ts: float | None) -> set[str]:
    """Anchors of the speaker's name ("spk:" + each name word, lower case) and of the timestamp's
    UTC day (the day written, for a naive time: see :func:`to_timestamp`)."""
    out: set[str] = set()
    if speaker is not None:
        out.update(SPEAKER_PREFIX + w.lower() for w in _NAME_WORD.findall(speaker) if w.lower() not in STOPWORDS)
    if ts is not None:
        day = dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)
        out.update(date_anchors(day.year, day.month, day.day))
    return out
