"""``offload(model, stack, prefetch=2)``: run a model whose weights live in a VGPUStack.

Every module that owns parameters or buffers directly (for a plain model: every leaf such as
nn.Linear, nn.LayerNorm, apt_ext.nn.FP4Linear) is a *unit*. Its tensors are stored in the stack
and replaced by empty placeholders. A forward pre-hook pins the unit's keys, makes them resident
(``stack.get``: promoted to the device level) and starts prefetching the next ``prefetch`` units
in execution order (recorded during the first forward; module registration order before that);
a forward post-hook puts the placeholders back and unpins, so the pager may evict them.
Inputs must be on ``stack.device``. Inference only: gradients of offloaded weights are not kept.
Every unit gets the attribute ``_apt_paged = True`` (until ``restore()``): a module that would
otherwise keep a private device copy of its weights (``apt_ext.nn.FP4Linear``'s tiled copy)
does without it, so the device budget holds.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from apt_ext.vgpu.stack import VGPUStack

_offload_ids = itertools.count()


@dataclass
class _Unit:
    module: nn.Module
    # (attribute name, is_parameter, stack key)
    tensors: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [k for _, _, k in self.tensors]


class OffloadHandle:
    """Returned by ``offload``: ``order`` is the recorded execution order (module names);
    ``restore()`` puts the weights back into the model (on ``device``) and removes hooks and keys."""

    def __init__(self, model: nn.Module, stack: VGPUStack, units: list[tuple[str, _Unit]], prefetch: int) -> None:
        self.model, self.stack, self.prefetch = model, stack, prefetch
        self._units = dict(units)
        self.order: list[str] = [name for name, _ in units]
        self._recorded: list[str] = []
        self._recording = True
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._placeholders: dict[str, torch.Tensor] = {}

    def _set(self, unit: _Unit, name: str, is_param: bool, value: torch.Tensor) -> None:
        if is_param:
            unit.module._parameters[name].data = value
        else:
            unit.module._buffers[name] = value

    def _pre(self, name: str) -> None:
        unit = self._units[name]
        if self._recording:
            if self._recorded and name == self._recorded[0]:  # a second forward: the order is known
                self._recording = False
                self.order = self._recorded
            elif name not in self._recorded:
                self._recorded.append(name)
        for attr, is_param, key in unit.tensors:
            self.stack.pin(key)
        for attr, is_param, key in unit.tensors:
            self._set(unit, attr, is_param, self.stack.get(key))
        if self.prefetch > 0 and name in self.order:
            i = self.order.index(name)
            nxt = [self.order[(i + j) % len(self.order)] for j in range(1, self.prefetch + 1) if j < len(self.order)]
            keys = [k for n in nxt for k in self._units[n].keys]
            if keys:
                self.stack.prefetch(keys)

    def _post(self, name: str) -> None:
        unit = self._units[name]
        for attr, is_param, key in unit.tensors:
            self._set(unit, attr, is_param, self._placeholders[key])
            self.stack.unpin(key)

    def _attach(self) -> None:
        for name, unit in self._units.items():
            self._hooks.append(unit.module.register_forward_pre_hook(lambda m, a, n=name: self._pre(n)))
            self._hooks.append(unit.module.register_forward_hook(lambda m, a, o, n=name: self._post(n)))

    def restore(self, device: str | torch.device | None = None) -> nn.Module:
        """Undo ``offload``: weights back in the model on ``device`` (default: the stack's device)."""
        device = torch.device(device) if device is not None else self.stack.device
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for unit in self._units.values():
            for attr, is_param, key in unit.tensors:
                if key in self.stack:
                    self._set(unit, attr, is_param, self.stack.get(key, device=device))
                    self.stack.remove(key)
            unit.module._apt_paged = False
        if getattr(self.model, "_apt_offload", None) is self:
            del self.model._apt_offload
        return self.model


def offload(model: nn.Module, stack: VGPUStack, prefetch: int = 2) -> OffloadHandle:
    """Move the weights of ``model`` into ``stack`` and hook its modules (see module docstring).

    Returns an ``OffloadHandle``. Tied tensors (one Parameter in several modules) are stored once.
    Raises VGPUCapacityError (with the model left as it was) when the weights do not fit.
    Offloading a model that is already offloaded to ``stack`` returns its handle (with
    ``prefetch`` updated) and changes nothing else; to another stack, or when one of its
    submodules was offloaded on its own, it raises ValueError: ``restore()`` first.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(stack, VGPUStack):
        raise TypeError(f"stack: expected a VGPUStack, got {type(stack).__name__}")
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise ValueError(f"prefetch: expected an int >= 0, got {prefetch!r}")
    if stack.closed:
        raise ValueError("stack: the VGPUStack is closed")
    current = getattr(model, "_apt_offload", None)
    if current is not None:
        if current.stack is not stack:
            raise ValueError("model: already offloaded to another VGPUStack; call restore() on the handle "
                             "offload() returned, then offload it again")
        current.prefetch = prefetch
        return current
    paged = next((name for name, m in model.named_modules() if getattr(m, "_apt_paged", False)), None)
    if paged is not None:
        which = repr(paged) if paged else "the model itself"
        raise ValueError(f"model: {which} is already offloaded by another offload() call; "
                         f"restore() that handle first")
    prefix = f"offload{next(_offload_ids)}:"
    units: list[tuple[str, _Unit]] = []
    seen: dict[int, str] = {}
    originals: list[tuple[_Unit, str, bool, torch.Tensor]] = []
    stored: list[str] = []
    try:
        for mname, mod in model.named_modules():
            unit = _Unit(mod)
            direct = [(n, True, p) for n, p in mod._parameters.items() if p is not None]
            direct += [(n, False, b) for n, b in mod._buffers.items() if b is not None]
            for attr, is_param, t in direct:
                data = t.data if is_param else t
                key = seen.get(id(t))
                if key is None:
                    key = f"{prefix}{mname}.{attr}" if mname else f"{prefix}{attr}"
                    stack.put(key, data)
                    stored.append(key)
                    seen[id(t)] = key
                unit.tensors.append((attr, is_param, key))
                originals.append((unit, attr, is_param, data))
            if unit.tensors:
                units.append((mname, unit))
                mod._apt_paged = True
    except BaseException:
        for key in stored:
            stack.remove(key)
        raise
    handle = OffloadHandle(model, stack, units, prefetch)
    for unit, attr, is_param, data in originals:
        key = next(k for a, p, k in unit.tensors if a == attr and p == is_param)
        if key not in handle._placeholders:
            handle._placeholders[key] = torch.empty(0, dtype=data.dtype, device=stack.device)
        handle._set(unit, attr, is_param, handle._placeholders[key])
    handle._attach()
    model._apt_offload = handle
    return handle
