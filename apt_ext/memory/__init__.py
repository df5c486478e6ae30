"""AIM-Memory: long-term memory for LLM applications on real sentence embeddings, with inertial
cluster routing, anchors, temporal decay and a SQLite (WAL) store. See docs/memory.md."""
from __future__ import annotations

from apt_ext.memory.anchors import extract_anchors
from apt_ext.memory.config import AIMConfig
from apt_ext.memory.embedder import MiniLMEmbedder
from apt_ext.memory.index import ClusterIndex
from apt_ext.memory.memory import AIMMemory, create_aim_memory
from apt_ext.memory.node import MemoryNode

__all__ = ["AIMConfig", "AIMMemory", "ClusterIndex", "MemoryNode", "MiniLMEmbedder",
           "create_aim_memory", "extract_anchors"]
