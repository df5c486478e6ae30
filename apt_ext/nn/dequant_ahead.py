"""``dequant_ahead``: FP4Linear weights dequantised one layer ahead, on a side CUDA stream.

Where a call has many rows of x, ``FP4Linear`` dequantises its weight to bfloat16 and multiplies
with cuBLAS (``fp4_linear``): the dequantisation is a separate kernel on the critical path, one per
layer per forward. A model whose GEMMs do not fill the GPU (small weights, as in a BERT-base-size
encoder) spends much of its FP4 overhead there. Under ``dequant_ahead(model)`` each managed
layer, while its own GEMM runs, has the *next* layer's weight dequantised on a side stream into
one of two bf16/fp16 buffers; the next call then multiplies by that buffer (``F.linear``).

The call order is learnt from the first forward under the handle (every call of that forward
dequantises on the current stream); later forwards prefetch along it. A layer called out of that
order, or a second time in one forward (shared weights), dequantises on the current stream, so
results never depend on the order. Each prefetch is joined back into the current stream right
after the GEMM it overlaps, so no side-stream work is left pending between calls: CUDA-graph
capture and replay see a plain fork and join.

Calls it takes: x on CUDA in bfloat16 or float16, at least ``min_rows`` rows, no gradient needed
(the buffers are overwritten by later layers, so they cannot be saved for a backward), not while
torch.compile traces, on layers whose canonical tensors are present (not ``release_canonical()``)
and not paged by ``apt_ext.vgpu.offload``. Every other call runs ``FP4Linear`` as before. Memory:
two buffers of the largest managed weight in x's dtype (a BERT-base encoder: 2 x 4.5 MiB).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from apt_ext.nn.fp4_linear import TILED_MAX_ROWS_BF16_NVFP4_MXFP4, FP4Linear

# Rows of x from which a managed call takes the dequantised buffer by default: the first row count
# at which FP4Linear dequantises + multiplies with cuBLAS anyway for nvfp4 / mxfp4 and bf16 x
# (below it the tiled kernels read the 4-bit weight directly), so the default only moves work
# that runs already off the critical path.
DEFAULT_MIN_ROWS = TILED_MAX_ROWS_BF16_NVFP4_MXFP4 + 1


@dataclass
class _DeviceState:
    """The side stream and the two weight buffers of one device (flat, in one dtype)."""

    stream: torch.cuda.Stream
    buffers: list[torch.Tensor] = field(default_factory=list)
    ready_pos: int = -1   # the order position whose weight a buffer holds, joined (-1: none)
    ready_buf: int = 0


class DequantAhead:
    """Handle of :func:`dequant_ahead`: ``remove()`` (or leaving a ``with`` block) restores the
    layers. ``order`` lists the managed layers in the call order learnt so far."""

    def __init__(self, layers: list[FP4Linear], min_rows: int) -> None:
        self.layers = layers
        self.min_rows = min_rows
        self.order: list[FP4Linear] = []
        self._position: dict[int, int] = {}  # id(layer) -> its first position in `order`
        self._states: dict[torch.device, _DeviceState] = {}
        self._removed = False
        for layer in layers:
            layer._ahead = self

    # -- the public face -------------------------------------------------------------------------
    def remove(self) -> None:
        """Detach from the layers and free the buffers (the layers run as before). Idempotent."""
        for layer in self.layers:
            if layer._ahead is self:
                layer._ahead = None
        self._states.clear()
        self._removed = True

    def __enter__(self) -> "DequantAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- FP4Linear.forward calls this ------------------------------------------------------------
    def takes(self, layer: FP4Linear, x: torch.Tensor) -> bool:
        """Whether ``layer``'s call on ``x`` runs on a dequantised buffer (module docstring)."""
        if not x.is_cuda or x.dtype not in (torch.bfloat16, torch.float16):
            return False
        if x.numel() < self.min_rows * layer.in_features or torch.compiler.is_compiling():
            return False
        if layer.canonical_released or layer._apt_paged or not layer.packed.is_cuda:
            return False
        needs_grad = x.requires_grad or (layer.bias is not None and layer.bias.requires_grad)
        return not (torch.is_grad_enabled() and needs_grad)

    def linear(self, layer: FP4Linear, x: torch.Tensor) -> torch.Tensor:
        """x [..., in_features] @ W.T + bias with W from a buffer (``takes`` said yes)."""
        device = x.device
        state = self._state(device, x.dtype)
        pos = self._position.get(id(layer))
        if pos is None:  # first call of this layer under the handle: learn its place
            pos = self._position[id(layer)] = len(self.order)
            self.order.append(layer)
        if state.ready_pos == pos:
            buf = state.ready_buf
        else:  # not prefetched: dequantise on the current stream (in order with every earlier use)
            buf = 1 - state.ready_buf
            _dequantize_into(layer, state.buffers[buf])
        state.ready_pos = -1
        nxt = self.order[pos + 1] if pos + 1 < len(self.order) else None
        current = torch.cuda.current_stream(device)
        if nxt is not None and nxt.packed.device == device and not nxt.canonical_released and not nxt._apt_paged:
            # the other buffer was last read by the GEMM before this one, already queued here: the
            # side stream starts after it and runs beside this call's GEMM
            target = 1 - buf
            state.stream.wait_stream(current)
            with torch.cuda.stream(state.stream):
                _dequantize_into(nxt, state.buffers[target])
            state.ready_pos, state.ready_buf = pos + 1, target
        w = _weight_view(layer, state.buffers[buf])
        out = F.linear(x, w, layer.bias.to(x.dtype) if layer.bias is not None else None)
        if state.ready_pos >= 0:
            current.wait_stream(state.stream)  # joined at once: nothing pending between calls
        return out

    def _state(self, device: torch.device, dtype: torch.dtype) -> _DeviceState:
        state = self._states.get(device)
        numel = max(layer.out_features * _padded_cols(layer) for layer in self.layers)
        if state is None or state.buffers[0].dtype != dtype:
            # new buffers on the current stream; the old ones' pending uses are all on it (joined)
            stream = state.stream if state is not None else torch.cuda.Stream(device)
            state = _DeviceState(stream, [torch.empty(numel, dtype=dtype, device=device) for _ in range(2)])
            self._states[device] = state
            from apt_ext.triton.fp4_decode import nf4_lut

            nf4_lut(device)  # its cached table made here, on the current stream, not on the side one
        return state


def _padded_cols(layer: FP4Linear) -> int:
    """Columns of the dequantised weight: in_features rounded up to the format's block."""
    return layer.packed.shape[1] * 2


def _weight_view(layer: FP4Linear, buf: torch.Tensor) -> torch.Tensor:
    """The [out_features, in_features] weight in the first elements of ``buf`` (padded rows)."""
    cols = _padded_cols(layer)
    return buf[:layer.out_features * cols].view(layer.out_features, cols)[:, :layer.in_features]


def _dequantize_into(layer: FP4Linear, buf: torch.Tensor) -> None:
    from apt_ext.triton.fp4_dequantize import dequantize_into

    cols = _padded_cols(layer)
    out = buf[:layer.out_features * cols].view(layer.out_features, cols)
    dequantize_into(layer.packed, layer.scales, layer.tensor_scale.reshape(()), layer.fmt, layer.block_size, out)


def dequant_ahead(model: nn.Module, min_rows: int = DEFAULT_MIN_ROWS) -> DequantAhead:
    """Manage every ``FP4Linear`` of ``model``: calls with at least ``min_rows`` rows of x (leading
    dims flattened; bf16/fp16 x on CUDA, no gradient) multiply by a bf16/fp16 copy of the weight
    dequantised one layer ahead on a side stream (module docstring). Returns the handle; use it as
    a context manager or call ``remove()``. ValueError when ``model`` has no FP4Linear or one of
    them is already managed."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(min_rows, int) or isinstance(min_rows, bool) or min_rows < 1:
        raise ValueError(f"min_rows: expected a positive int, got {min_rows!r}")
    layers = [m for m in model.modules() if isinstance(m, FP4Linear)]
    if not layers:
        raise ValueError("model: has no FP4Linear layer (quantise it first: apt_ext.quantize_)")
    taken = [fqn for fqn, m in model.named_modules() if isinstance(m, FP4Linear) and m._ahead is not None]
    if taken:
        raise ValueError(f"model: {len(taken)} FP4Linear layer(s) are already managed by a dequant_ahead handle "
                         f"(e.g. {taken[0] or 'the model'!r}); remove() it first")
    return DequantAhead(layers, min_rows)
