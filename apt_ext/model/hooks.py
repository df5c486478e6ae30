"""Functions run on every ``APTModel`` at the end of its constructor.

``apt_ext.vb.enable()`` adds one here so that models built afterwards get its features; the
model never imports vb. Hooks run in the order they were added.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

_INIT_HOOKS: list[Callable[[nn.Module], object]] = []


def add_init_hook(fn: Callable[[nn.Module], object]) -> None:
    """Run ``fn(model)`` at the end of every later ``APTModel.__init__`` (once per fn)."""
    if not callable(fn):
        raise TypeError(f"fn: expected a callable(model), got {type(fn).__name__}")
    if fn not in _INIT_HOOKS:
        _INIT_HOOKS.append(fn)


def remove_init_hook(fn: Callable[[nn.Module], object]) -> None:
    """Stop running ``fn``; nothing happens if it was not added."""
    if fn in _INIT_HOOKS:
        _INIT_HOOKS.remove(fn)


def run_init_hooks(model: nn.Module) -> None:
    """Called by ``APTModel.__init__`` as its last step."""
    for fn in list(_INIT_HOOKS):
        fn(model)
