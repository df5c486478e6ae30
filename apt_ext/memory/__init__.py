"""AIM-Memory: long-term memory for LLM applications on real sentence embeddings, with hybrid
recall (inertial cluster routing over embeddings, BM25, anchors), temporal decay, exact text,
and a SQLite (WAL, embedded) or PostgreSQL (shared) store. See docs/memory.md."""
from __future__ import annotations

from apt_ext.memory.anchors import extract_anchors
from apt_ext.memory.config import AIMConfig
from apt_ext.memory.embedder import MiniLMEmbedder, default_embedder
from apt_ext.memory.index import ClusterIndex
from apt_ext.memory.memory import AIMMemory, create_aim_memory
from apt_ext.memory.node import MemoryNode
from apt_ext.memory.onnx_embedder import OnnxMiniLMEmbedder

__all__ = ["AIMConfig", "AIMMemory", "ClusterIndex", "MemoryNode", "MiniLMEmbedder", "OnnxMiniLMEmbedder",
           "create_aim_memory", "default_embedder", "extract_anchors"]
