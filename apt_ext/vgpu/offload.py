"""``offload(model, stack, prefetch=2)``: run a model whose weights live in a VGPUStack.

Every module that owns parameters or buffers directly (for a plain model: every leaf such as
nn.Linear, nn.LayerNorm, apt_ext.nn.FP4Linear) is a *unit*. Its tensors are stored in the stack
and replaced by empty placeholders: the tensors a unit owns alone share one stack entry (their
bytes packed at 64-byte offsets), so that a unit costs one pin, one promotion and one copy
however many tensors it has (an FP4Linear has three: codes, scales, tensor scale; a Linear with a
bias two); a tensor tied to another module keeps an entry of its own. A forward pre-hook pins the unit's keys, makes them resident
(``stack.get``: promoted to the device level) and starts prefetching the next ``prefetch`` units
in execution order (recorded during the first forward; module registration order before that);
a forward post-hook puts the placeholders back and unpins, so the pager may evict them.
A forward visits every unit once, in the same order: for a model larger than the device level,
LRU alone would evict each unit before its next use and move every byte every forward. So by
default (``keep_resident=True``) ``offload`` keeps units on the device level for good (promoted
and pinned once; ``OffloadHandle.resident`` names them): the small ones first (up to
``SMALL_UNIT_BYTES``: a paged unit costs the host the same hooks and copy launch whatever its
size, and eager decoding is often bound by that host time), then the largest that fit, leaving
room for
the ``prefetch + 1`` largest of the others in flight, and only the rest crosses the link each
forward; those kept hold their device tensors for good and get no hooks (a forward pays the
hooks' host time only for the units that move). Among units of equal size (repeated layers) the
kept ones are spread over the model, and a pre-hook prefetches the next ``prefetch`` *paged*
units, skipping resident ones, so that each copy overlaps the compute of the resident units
before it.
Inputs must be on ``stack.device``. Inference only: gradients of offloaded weights are not kept.
Every unit gets the attribute ``_apt_paged = True`` (until ``restore()``): a module that would
otherwise keep a private device copy of its weights (``apt_ext.nn.FP4Linear``'s tiled copy)
does without it, so the device budget holds.
"""
from __future__ import annotations

import functools
import heapq
import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from apt_ext.vgpu.stack import VGPUStack

_offload_ids = itertools.count()


_PACK_ALIGN = 64  # byte alignment of each tensor inside a unit's packed entry

# Units up to this size are kept resident before any larger one (smallest first): a paged unit
# costs the host its two hooks, a promotion, a copy launch and events every forward whatever its
# size, and a step of eager decoding is often bound by that host time. On the H200 run of
# benchmarks/virtual_vram.py (Llama-3-8B shapes, nvfp4, 4 GB device budget; docs/vgpu.md) the
# rule took the paged units from about 225 to 54 (16 MiB: norms and every attention projection
# kept) for the same bytes per step, and the link's busy share of the step from about half to
# 97% at batch 1 in the best run.
SMALL_UNIT_BYTES = 16 << 20


@dataclass
class _Slot:
    """One tensor attribute of a unit: stored as stack entry ``key`` itself (``offset`` None), or
    as ``dtype``/``shape`` at byte ``offset`` of the packed uint8 entry ``key``."""
    attr: str
    is_param: bool
    key: str
    offset: int | None = None
    dtype: torch.dtype | None = None
    shape: tuple[int, ...] = ()
    nbytes: int = 0

    def value(self, entry: torch.Tensor) -> torch.Tensor:
        """This slot's tensor from its entry's tensor (a view into a packed entry)."""
        if self.offset is None:
            return entry
        return entry[self.offset:self.offset + self.nbytes].view(self.dtype).view(self.shape)


@dataclass
class _Unit:
    module: nn.Module
    tensors: list[_Slot] = field(default_factory=list)

    @functools.cached_property
    def keys(self) -> list[str]:
        """The unit's stack entries, each once, in first-use order (read by every forward's hooks;
        computed once: a unit's slots are fixed when ``offload`` returns)."""
        return list(dict.fromkeys(t.key for t in self.tensors))


def _pack(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    """The bytes of ``tensors`` in one uint8 tensor (on the first one's device), each starting at a
    multiple of _PACK_ALIGN bytes; returns (packed, offsets)."""
    offsets, end = [], 0
    for t in tensors:
        offsets.append(end)
        end += -(-t.nbytes // _PACK_ALIGN) * _PACK_ALIGN
    packed = torch.empty(end, dtype=torch.uint8, device=tensors[0].device)
    for t, off in zip(tensors, offsets):
        packed[off:off + t.nbytes].copy_(t.detach().contiguous().reshape(-1).view(torch.uint8))
    return packed, offsets


class OffloadHandle:
    """Returned by ``offload``: ``order`` is the recorded execution order (module names) of the
    units that move (those kept resident have no hooks; registration order before a forward);
    ``restore()`` puts the weights back into the model (on ``device``) and removes hooks and keys."""

    def __init__(self, model: nn.Module, stack: VGPUStack, units: list[tuple[str, _Unit]], prefetch: int) -> None:
        self.model, self.stack, self.prefetch = model, stack, prefetch
        self._units = dict(units)
        #: units kept on the device level for good (pinned once by ``offload(keep_resident=True)``)
        self.resident: list[str] = []
        self._entry_bytes: dict[str, int] = {}  # stack key -> bytes (filled by offload)
        self._targets: dict[str, list[str]] = {}  # unit -> the units its pre-hook prefetches
        self._targets_key: tuple[int, int] | None = None  # (id(order), prefetch) they were made for
        self.order: list[str] = [name for name, _ in units]
        self._recorded: list[str] = []
        self._recording = True
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._placeholders: dict[tuple[str, str], torch.Tensor] = {}  # (key, attr) -> empty tensor

    def _set(self, unit: _Unit, slot: _Slot, value: torch.Tensor) -> None:
        if slot.is_param:
            unit.module._parameters[slot.attr].data = value
        else:
            unit.module._buffers[slot.attr] = value

    def _pre(self, name: str) -> None:
        unit = self._units[name]
        if self._recording:
            if self._recorded and name == self._recorded[0]:  # a second forward: the order is known
                self._recording = False
                self.order = self._recorded
            elif name not in self._recorded:
                self._recorded.append(name)
        keys = unit.keys
        for key in keys:
            self.stack.pin(key)
        entries = {key: self.stack.get(key) for key in keys}
        for slot in unit.tensors:
            self._set(unit, slot, slot.value(entries[slot.key]))
        if self.prefetch > 0:
            keys = [k for n in self._prefetch_targets(name) for k in self._units[n].keys]
            if keys:
                self.stack.prefetch(keys)

    @property
    def resident_bytes(self) -> int:
        """Bytes of the units kept on the device level for good (``resident``)."""
        return sum(self._entry_bytes[k] for n in self.resident for k in self._units[n].keys)

    def _prefetch_targets(self, name: str) -> list[str]:
        """The next ``prefetch`` units after ``name`` in execution order (wrapping around) that
        are not kept resident: a copy starts that many paged units ahead, however many resident
        units run in between. Cached per order and prefetch depth."""
        if self._targets_key != (id(self.order), self.prefetch):
            kept = set(self.resident)
            n = len(self.order)
            self._targets = {}
            for i, unit in enumerate(self.order):
                nxt = []
                for j in range(1, n):
                    if len(nxt) == self.prefetch:
                        break
                    other = self.order[(i + j) % n]
                    if other not in kept:
                        nxt.append(other)
                self._targets[unit] = nxt
            self._targets_key = (id(self.order), self.prefetch)
        return self._targets.get(name, [])

    def _post(self, name: str) -> None:
        unit = self._units[name]
        for slot in unit.tensors:
            self._set(unit, slot, self._placeholders[(slot.key, slot.attr)])
        for key in unit.keys:
            self.stack.unpin(key)

    def _attach(self) -> None:
        kept = set(self.resident)
        for name, unit in self._units.items():
            if name in kept:
                continue
            self._hooks.append(unit.module.register_forward_pre_hook(lambda m, a, n=name: self._pre(n)))
            self._hooks.append(unit.module.register_forward_hook(lambda m, a, o, n=name: self._post(n)))

    def restore(self, device: str | torch.device | None = None) -> nn.Module:
        """Undo ``offload``: weights back in the model on ``device`` (default: the stack's device)."""
        device = torch.device(device) if device is not None else self.stack.device
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for name in self.resident:
            for key in self._units[name].keys:
                self.stack.unpin(key)
        self.resident = []
        restored: dict[str, torch.Tensor] = {}  # tied entries: fetched once, removed after all units
        for unit in self._units.values():
            for slot in unit.tensors:
                if slot.key not in restored and slot.key in self.stack:
                    restored[slot.key] = self.stack.get(slot.key, device=device)
                if slot.key in restored:  # a packed slot gets its own copy, not a view of the packed bytes
                    value = slot.value(restored[slot.key])
                    self._set(unit, slot, value if slot.offset is None else value.clone())
            unit.module._apt_paged = False
        for key in restored:
            self.stack.remove(key)
        if getattr(self.model, "_apt_offload", None) is self:
            del self.model._apt_offload
        return self.model

    def _keep_resident(self) -> None:
        """Promote and pin the units that fit on the device level beside the room the
        ``prefetch + 1`` largest other units need (90% of its capacity in all): units of at most
        ``SMALL_UNIT_BYTES`` first (smallest first), then the largest; units of equal size spread
        over the model: see the module docstring. Units sharing a tied entry are never kept (their
        entry is counted once per unit here, and pinned by several)."""
        level0 = self.stack.stats()["levels"][0]
        if level0["kind"] != "device":
            return
        key_units: dict[str, int] = {}
        for unit in self._units.values():
            for key in unit.keys:
                key_units[key] = key_units.get(key, 0) + 1
        sizes = {name: sum(self._entry_bytes[k] for k in unit.keys) for name, unit in self._units.items()
                 if all(key_units[k] == 1 for k in unit.keys)}
        # Largest first; among units of one size (a model's repeated layers) in an order spread
        # over the model (bit-reversed position), so that the paged ones are interleaved with
        # resident ones and each copy overlaps the compute of the resident units before it.
        groups: dict[int, list[str]] = {}
        for name in sizes:
            groups.setdefault(sizes[name], []).append(name)
        spread = {}
        for names in groups.values():
            bits = max(1, (len(names) - 1).bit_length())
            for i, name in enumerate(names):
                spread[name] = int(format(i, f"0{bits}b")[::-1], 2)
        small = sorted((n for n in sizes if sizes[n] <= SMALL_UNIT_BYTES), key=lambda n: (sizes[n], spread[n]))
        large = sorted((n for n in sizes if sizes[n] > SMALL_UNIT_BYTES), key=lambda n: (-sizes[n], spread[n]))
        ranked = small + large
        by_size = [sizes[n] for n in ranked]
        limit = 0.9 * level0["capacity_bytes"]
        keep = 0
        for i in range(len(ranked) + 1):
            room = sum(heapq.nlargest(self.prefetch + 1, by_size[i:]))
            if sum(by_size[:i]) + room <= limit:
                keep = i
        for name in ranked[:keep]:
            unit = self._units[name]
            entries = {}
            for key in unit.keys:
                entries[key] = self.stack.get(key)  # promoted to the device level
                self.stack.pin(key)
            # pinned for good, so its tensors stay valid: set once, and the unit gets no hooks
            # (a forward pays the hooks' host time only for the units that move)
            for slot in unit.tensors:
                self._set(unit, slot, slot.value(entries[slot.key]))
            self.resident.append(name)


def offload(model: nn.Module, stack: VGPUStack, prefetch: int = 2, keep_resident: bool = True) -> OffloadHandle:
    """Move the weights of ``model`` into ``stack`` and hook its modules (see module docstring).

    ``keep_resident``: keep the largest units that fit on the device level there for good
    (default), so that a model larger than the level moves only the rest each forward; False
    pages every unit through LRU alone.
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
    if not isinstance(keep_resident, bool):
        raise TypeError(f"keep_resident: expected a bool, got {keep_resident!r}")
    if stack.closed:
        raise ValueError("stack: the VGPUStack is closed")
    current = getattr(model, "_apt_offload", None)
    if current is not None:
        if current.stack is not stack:
            raise ValueError("model: already offloaded to another VGPUStack; call restore() on the handle "
                             "offload() returned, then offload it again")
        current.prefetch = prefetch
        return current
    released = next((name for name, m in model.named_modules() if getattr(m, "canonical_released", False)), None)
    if released is not None:
        raise ValueError(f"model: {released!r} keeps only its tiled FP4 copy (FP4Linear.release_canonical()), "
                         f"which stays on its device; call restore_canonical() on it before offload")
    paged = next((name for name, m in model.named_modules() if getattr(m, "_apt_paged", False)), None)
    if paged is not None:
        which = repr(paged) if paged else "the model itself"
        raise ValueError(f"model: {which} is already offloaded by another offload() call; "
                         f"restore() that handle first")
    prefix = f"offload{next(_offload_ids)}:"
    owners: dict[int, int] = {}  # id(tensor) -> how many modules own it directly (tied if > 1)
    for mod in model.modules():
        for t in itertools.chain(mod._parameters.values(), mod._buffers.values()):
            if t is not None:
                owners[id(t)] = owners.get(id(t), 0) + 1
    units: list[tuple[str, _Unit]] = []
    seen: dict[int, str] = {}
    originals: list[tuple[_Unit, _Slot, torch.Tensor]] = []
    stored: list[str] = []
    entry_bytes: dict[str, int] = {}
    try:
        for mname, mod in model.named_modules():
            unit = _Unit(mod)
            direct = [(n, True, p) for n, p in mod._parameters.items() if p is not None]
            direct += [(n, False, b) for n, b in mod._buffers.items() if b is not None]
            own = [(attr, is_param, t) for attr, is_param, t in direct if owners[id(t)] == 1]
            base = f"{prefix}{mname}" if mname else prefix.rstrip(":")
            if len(own) > 1:  # the unit's own tensors: one packed entry
                datas = [t.data if is_param else t for _, is_param, t in own]
                packed, offsets = _pack(datas)
                key = f"{base}.__packed__"
                stack.put(key, packed)
                stored.append(key)
                entry_bytes[key] = packed.nbytes
                for (attr, is_param, _), data, off in zip(own, datas, offsets):
                    slot = _Slot(attr, is_param, key, off, data.dtype, tuple(data.shape), data.nbytes)
                    unit.tensors.append(slot)
                    originals.append((unit, slot, data))
                direct = [d for d in direct if owners[id(d[2])] > 1]
            for attr, is_param, t in direct:
                data = t.data if is_param else t
                key = seen.get(id(t))
                if key is None:
                    key = f"{base}.{attr}" if mname else f"{prefix}{attr}"
                    stack.put(key, data)
                    stored.append(key)
                    entry_bytes[key] = data.nbytes
                    seen[id(t)] = key
                slot = _Slot(attr, is_param, key)
                unit.tensors.append(slot)
                originals.append((unit, slot, data))
            if unit.tensors:
                units.append((mname, unit))
                mod._apt_paged = True
    except BaseException:
        for key in stored:
            stack.remove(key)
        for _, mod in model.named_modules():
            mod.__dict__.pop("_apt_paged", None)
        raise
    handle = OffloadHandle(model, stack, units, prefetch)
    handle._entry_bytes = entry_bytes
    for unit, slot, data in originals:
        ph = handle._placeholders.setdefault((slot.key, slot.attr), torch.empty(0, dtype=data.dtype, device=stack.device))
        handle._set(unit, slot, ph)
    if keep_resident:
        handle._keep_resident()
    handle._attach()
    model._apt_offload = handle
    return handle
