"""``dequant_ahead``: FP4Linear weights dequantised ahead of their calls, on a side CUDA stream.

Where a call has many rows of x, ``FP4Linear`` dequantises its weight to bfloat16 and multiplies
with cuBLAS (``fp4_linear``): a separate dequantisation kernel on the critical path, one per layer
per forward. A model whose GEMMs do not fill the GPU (small weights, as in a BERT-base-size
encoder) spends much of its FP4 overhead there. Under ``dequant_ahead(model)`` the managed layers'
weights are dequantised a group at a time into one of two buffers ("banks") on a side stream,
while the previous group's layers compute; each call then multiplies by its slice of a bank
(``F.linear``).

- The call order is learnt from the calls themselves (the first forward under the handle
  dequantises on the current stream). Consecutive layers of that order form groups of at most
  ``group_bytes`` of dequantised weight (at least one layer each); group g lives in bank g % 2.
- The first call of group g joins its prefetch into the current stream (or, when group g was not
  prefetched, dequantises the whole group on the current stream) and forks the side stream to
  dequantise group g + 1 into the other bank. The fork orders the side stream after every call
  queued so far, so after the last reader of that bank (group g - 1). One fork and one join per
  group, not per layer: in a CUDA graph each cross-stream edge costs latency.
- A layer called out of that order, or again after its bank was refilled, or whose weight
  tensors were replaced or written in place since (``load_state_dict``: addresses and version
  counters are compared), dequantises its group on the current stream: results never depend on
  the order, only the overlap does. A model whose groups all fit in the two banks keeps them
  (dequantised once) until its weights change.
- Each layer of a group is dequantised by its own launch. One launch per group and format (a
  table of the layers' addresses) was tried and was slower on an H100 (BERT-base-size encoder,
  every call managed, CUDA-graph replay: 0.751 / 1.081 ms at batch 1 / 8 against 0.696 / 1.044 with
  a launch per layer; benchmarks/results/e2e_encoder_NVIDIA_H100_80GB_HBM3_s34b.json and
  _s34_perlayer.json).

Calls it takes: x on CUDA in bfloat16 or float16, at least ``min_rows`` rows, no gradient needed
(the banks are overwritten by later groups, so they cannot be saved for a backward), not while
torch.compile traces, on layers whose canonical tensors are present (not ``release_canonical()``)
and not paged by ``apt_ext.vgpu.offload``. Every other call runs ``FP4Linear`` as before.
CUDA graphs: a captured forward reads the banks, so keep the handle (and x's dtype) while
replaying it; a forward that stops before the layers the order expects leaves a prefetch pending:
call ``join()`` before ending such a capture.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from apt_ext.nn.fp4_linear import TILED_MAX_ROWS_BF16_NVFP4_MXFP4, FP4Linear

# Rows of x from which a managed call takes a bank by default: the first row count at which
# FP4Linear dequantises + multiplies with cuBLAS anyway for nvfp4 / mxfp4 and bf16 x (below it the
# tiled kernels read the 4-bit weight directly), so the default only moves work that runs already.
# Exception: on Hopper FP4Linear keeps weights of 8192+ rows or columns on the tiled op up to
# TILED_MAX_ROWS_HOPPER_LARGE rows (TILED_MAX_ROWS_HOPPER_WIDE on weights of 8192+ rows,
# TILED_MAX_ROWS_HOPPER_MEDIUM on other weights of 4096+ rows and columns); under the handle such
# calls from 129 rows multiply by a bank instead (the two were not compared; pass min_rows=513 to
# keep the tiled op there).
DEFAULT_MIN_ROWS = TILED_MAX_ROWS_BF16_NVFP4_MXFP4 + 1
# Bytes of dequantised weight per group. On an H100 (benchmarks/results/
# e2e_encoder_NVIDIA_H100_80GB_HBM3_s33_ahead2.json, BERT-base-size encoder, every call managed,
# CUDA-graph replay) 8 MiB groups took 0.704 / 1.044 ms at batch 1 / 8 against 0.752 / 1.041 with
# 32 MiB groups: the group dequantised on the current stream at a forward's start is smaller.
DEFAULT_GROUP_BYTES = 8 * 2**20


@dataclass
class _Pending:
    group: int
    event: torch.cuda.Event


@dataclass
class _DeviceState:
    """One device's side stream, two banks (flat, x's dtype) and which positions each holds."""

    stream: torch.cuda.Stream
    banks: list[torch.Tensor]
    owners: list[frozenset[int]] = field(default_factory=lambda: [frozenset(), frozenset()])
    pending: _Pending | None = None
    weights: dict[int, torch.Tensor] = field(default_factory=dict)  # position -> [N, K] view of its bank
    stamps: dict[int, tuple] = field(default_factory=dict)  # position -> _stamp of the weight it holds
    group: int = -1  # the group of the last managed call (its next group is forked on entering it)


class DequantAhead:
    """Handle of :func:`dequant_ahead`. ``order`` lists the managed layers in the call order learnt
    so far; ``join()`` waits for a pending prefetch; ``remove()`` (or leaving a ``with`` block)
    detaches it from the layers and frees the banks."""

    def __init__(self, layers: list[FP4Linear], min_rows: int, group_bytes: int) -> None:
        self.layers = layers
        self.min_rows = min_rows
        self.group_bytes = group_bytes
        self.order: list[FP4Linear] = []
        self._position: dict[int, int] = {}  # id(layer) -> its first position in `order`
        self._group_of: list[int] = []        # position -> group
        self._members: list[list[int]] = []   # group -> its positions
        self._offset: list[int] = []          # position -> element offset in its bank
        self._bank_numel = 0
        self._states: dict[torch.device, _DeviceState] = {}
        for layer in layers:
            layer._ahead = self

    # -- the public face -------------------------------------------------------------------------
    def join(self) -> None:
        """Make the current stream of every device wait for a pending prefetch (none after a
        forward that called the layers in the learnt order)."""
        for device, state in self._states.items():
            self._join(state, torch.cuda.current_stream(device))

    def remove(self) -> None:
        """Detach from the layers and free the banks (the layers run as before). Idempotent."""
        self.join()
        for layer in self.layers:
            if layer._ahead is self:
                layer._ahead = None
        for device, state in self._states.items():
            self._retire(state, torch.cuda.current_stream(device))
        self._states.clear()

    def __enter__(self) -> "DequantAhead":
        return self

    def __deepcopy__(self, memo: dict) -> None:
        return None  # a copy of a managed model is not managed (its streams and banks are this one's)

    def __reduce__(self) -> tuple:
        return _unmanaged, ()  # nor is a pickled one

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- FP4Linear.forward calls these -----------------------------------------------------------
    def takes(self, layer: FP4Linear, x: torch.Tensor) -> bool:
        """Whether ``layer``'s call on ``x`` multiplies by a bank (module docstring)."""
        if not x.is_cuda or x.dtype not in (torch.bfloat16, torch.float16):
            return False
        if x.numel() < self.min_rows * layer.in_features or torch.compiler.is_compiling():
            return False
        if layer._released or layer._apt_paged or not layer._buffers["packed"].is_cuda:
            return False
        bias = layer._parameters["bias"]
        needs_grad = x.requires_grad or (bias is not None and bias.requires_grad)
        return not (torch.is_grad_enabled() and needs_grad)

    def linear(self, layer: FP4Linear, x: torch.Tensor) -> torch.Tensor:
        """x [..., in_features] @ W.T + bias with W from a bank (``takes`` said yes)."""
        pos = self._position.get(id(layer))
        if pos is None:  # first call of this layer under the handle: learn its place
            pos = self._learn(layer)
        device = x.device
        current = torch.cuda.current_stream(device)
        state = self._state(device, x.dtype, current)
        g = self._group_of[pos]
        bank = g % 2
        if state.pending is not None and state.pending.group == g:
            self._join(state, current)
        if (pos not in state.owners[bank] or state.stamps.get(pos) != _stamp(layer)
                or (state.pending is not None and state.pending.group % 2 == bank)):
            # not prefetched (first forward, out of order, its bank refilled, or its weight
            # changed): the group on the current stream, after whatever the side stream still writes
            self._join(state, current)
            self._dequantize_group(g, state)
            state.owners[bank] = frozenset(self._members[g])
        if g != state.group:  # entering group g: prefetch g + 1 (a no-op when it is in its bank already)
            state.group = g
            if state.pending is None:
                self._fork(g + 1, state, current)
        w = state.weights.get(pos)
        if w is None:
            w = state.weights[pos] = self._slice(state.banks[bank], pos)[:, :layer.in_features]
        bias = layer._parameters["bias"]
        return F.linear(x, w, None if bias is None else bias.to(x.dtype))

    # -- internals -------------------------------------------------------------------------------
    def _learn(self, layer: FP4Linear) -> int:
        """Appends ``layer`` to the order, to the last group or a new one (by ``group_bytes``)."""
        pos = self._position[id(layer)] = len(self.order)
        self.order.append(layer)
        numel = _numel(layer)
        itemsize = 2  # bf16 / fp16 banks
        last = self._members[-1] if self._members else None
        used = sum(_numel(self.order[p]) for p in last) if last else 0
        if last is not None and (used + numel) * itemsize <= self.group_bytes:
            last.append(pos)
            self._offset.append(used)
        else:
            self._members.append([pos])
            self._offset.append(0)
            used = 0
        self._group_of.append(len(self._members) - 1)
        self._bank_numel = max(self._bank_numel, used + numel)
        return pos

    def _state(self, device: torch.device, dtype: torch.dtype, current: torch.cuda.Stream) -> _DeviceState:
        state = self._states.get(device)
        if state is not None and state.banks[0].dtype == dtype and state.banks[0].numel() >= self._bank_numel:
            return state
        # new banks (first call, another dtype, or a larger group learnt): made on the current
        # stream after any pending prefetch into the old ones
        if state is not None:
            self._join(state, current)
            self._retire(state, current)
        stream = state.stream if state is not None else torch.cuda.Stream(device)
        state = _DeviceState(stream, [torch.empty(self._bank_numel, dtype=dtype, device=device) for _ in range(2)])
        self._states[device] = state
        from apt_ext.triton.fp4_decode import nf4_lut

        nf4_lut(device)  # its cached table made here, on the current stream, not on the side one
        return state

    def _fork(self, g: int, state: _DeviceState, current: torch.cuda.Stream) -> None:
        """Dequantises group ``g`` (if it exists) into bank g % 2 on the side stream."""
        if g >= len(self._members):
            return
        bank = g % 2
        members = self._members[g]
        if state.owners[bank] == frozenset(members) and all(
                state.stamps.get(p) == _stamp(self.order[p]) for p in members):
            return  # still there from an earlier forward
        state.owners[bank] = frozenset()
        state.stream.wait_stream(current)
        with torch.cuda.stream(state.stream):
            self._dequantize_group(g, state)
            event = torch.cuda.Event()
            event.record(state.stream)
        state.owners[bank] = frozenset(members)
        state.pending = _Pending(g, event)

    def _dequantize_group(self, g: int, state: _DeviceState) -> None:
        """Group ``g``'s weights into bank g % 2, on the current stream: one launch per layer (one
        launch per group and format, reading a table of the layers' addresses, was slower: module
        docstring)."""
        from apt_ext.triton.fp4_dequantize import dequantize_into

        bank = state.banks[g % 2]
        for p in self._members[g]:
            layer = self.order[p]
            state.stamps[p] = _stamp(layer)
            b = layer._buffers
            dequantize_into(b["packed"], b["scales"], b["tensor_scale"].reshape(()), layer.fmt, layer.block_size,
                            self._slice(bank, p))

    @staticmethod
    def _retire(state: _DeviceState, current: torch.cuda.Stream) -> None:
        """Banks about to be dropped: the allocator reuses them only after the work queued on
        ``current`` (their last readers, and the joined side-stream writes) is done."""
        for bank in state.banks:
            bank.record_stream(current)

    @staticmethod
    def _join(state: _DeviceState, current: torch.cuda.Stream) -> None:
        if state.pending is not None:
            current.wait_event(state.pending.event)
            state.pending = None

    def _slice(self, bank: torch.Tensor, pos: int) -> torch.Tensor:
        """Position ``pos``'s dequantised weight in ``bank``: [out_features, padded in_features]."""
        layer = self.order[pos]
        cols = _padded_cols(layer)
        start = self._offset[pos]
        return bank[start:start + layer.out_features * cols].view(layer.out_features, cols)


def _unmanaged() -> None:
    """What a pickled handle loads as: no handle."""
    return None


def _padded_cols(layer: FP4Linear) -> int:
    """Columns of the dequantised weight: in_features rounded up to the format's block."""
    return layer._buffers["packed"].shape[1] * 2


def _numel(layer: FP4Linear) -> int:
    return layer.out_features * _padded_cols(layer)


def _stamp(layer: FP4Linear) -> tuple[int, ...]:
    """Identifies the contents of ``layer``'s weight tensors: their addresses and version counters
    (which in-place writes such as ``load_state_dict`` advance; -1 for inference tensors, which
    have none)."""
    b = layer._buffers
    out = []
    for name in ("packed", "scales", "tensor_scale"):
        t = b[name]
        try:
            version = t._version
        except RuntimeError:  # an inference tensor
            version = -1
        out += (t.data_ptr(), version)
    return tuple(out)


def dequant_ahead(model: nn.Module, min_rows: int = DEFAULT_MIN_ROWS,
                  group_bytes: int = DEFAULT_GROUP_BYTES) -> DequantAhead:
    """Manage every ``FP4Linear`` of ``model``: calls with at least ``min_rows`` rows of x (leading
    dims flattened; bf16/fp16 x on CUDA, no gradient) multiply by a bf16/fp16 copy of the weight
    dequantised ahead on a side stream, ``group_bytes`` (bytes of dequantised weight, at least one
    layer) at a time into one of two banks (module docstring). Returns the handle; use it as a
    context manager or call ``remove()``. ValueError when ``model`` has no FP4Linear or one of them
    is already managed."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(min_rows, int) or isinstance(min_rows, bool) or min_rows < 1:
        raise ValueError(f"min_rows: expected a positive int, got {min_rows!r}")
    if not isinstance(group_bytes, int) or isinstance(group_bytes, bool) or group_bytes < 1:
        raise ValueError(f"group_bytes: expected a positive int (bytes), got {group_bytes!r}")
    layers = [m for m in model.modules() if isinstance(m, FP4Linear)]
    if not layers:
        raise ValueError("model: has no FP4Linear layer (quantise it first: apt_ext.quantize_)")
    taken = [fqn for fqn, m in model.named_modules() if isinstance(m, FP4Linear) and m._ahead is not None]
    if taken:
        raise ValueError(f"model: {len(taken)} FP4Linear layer(s) are already managed by a dequant_ahead handle "
                         f"(e.g. {taken[0] or 'the model'!r}); remove() it first")
    return DequantAhead(layers, min_rows, group_bytes)
