"""``apt_model.memory``: AIM-Memory under the design document's path (re-exports of :mod:`apt_ext.memory`)."""
from apt_ext.memory import AIMConfig, AIMMemory, MemoryNode, create_aim_memory

__all__ = ["AIMConfig", "AIMMemory", "MemoryNode", "create_aim_memory"]
