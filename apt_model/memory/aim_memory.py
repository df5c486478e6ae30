"""``from apt_model.memory.aim_memory import create_aim_memory, AIMConfig`` (the design
document's path): :mod:`apt_ext.memory`."""
from apt_ext.memory import AIMConfig, AIMMemory, MemoryNode, create_aim_memory

__all__ = ["AIMConfig", "AIMMemory", "MemoryNode", "create_aim_memory"]
