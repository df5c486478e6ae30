"""MemoryNode: one stored memory as the API returns it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class MemoryNode:
    """A memory of one namespace.

    id: SQLite row id (stable across reopen). proto: float32 [dim] unit-norm embedding of the full
    text. summary: one-line summary kept in the index. fields: anchors, definitions, merge count
    and user metadata. links: ids of related older nodes (cosine above ``link_threshold`` at write
    time, or the node a write was merged into). w: effective weight in (0, 1] at the time the node
    was returned (``w_stored * gamma ** writes_since``). evidence_ptr: row id of its evidence text.
    evidence_text: the full text, filled by strict routing (None otherwise). created_at: Unix
    seconds. score: routing score of the last route that returned it (None when not routed).
    speaker, timestamp: the conversation fields given to ``write_memory`` (who said it; when, in
    Unix seconds), None when not given.
    """

    id: int
    proto: np.ndarray = field(repr=False)
    summary: str
    fields: dict[str, Any]
    links: list[int]
    w: float
    evidence_ptr: int
    evidence_text: str | None
    created_at: float
    namespace: str
    score: float | None = field(default=None)
    speaker: str | None = field(default=None)
    timestamp: float | None = field(default=None)

    def to_dict(self, with_proto: bool = False) -> dict[str, Any]:
        out = {"id": self.id, "summary": self.summary, "fields": self.fields, "links": self.links,
               "w": self.w, "evidence_ptr": self.evidence_ptr, "evidence_text": self.evidence_text,
               "created_at": self.created_at, "namespace": self.namespace, "score": self.score,
               "speaker": self.speaker, "timestamp": self.timestamp}
        if with_proto:
            out["proto"] = self.proto.tolist()
        return out
