"""The tiled layouts of an FP4 weight: private copies in the order a GEMV kernel reads them.

docs/contract.md §3's packed/scales tensors stay the interchange format (state_dict, safetensors,
other devices). Two copies can be made from them, once:

- ``tile(weight)`` for the CUDA GEMV ``torch.ops.apt.fp4_linear_tiled``, which streams it at
  memory bandwidth for few rows of x (csrc/fp4/fp4_tiled_layout.h describes the bytes);
- ``cpu_tile(weight)`` for the AVX-512 CPU kernel ``torch.ops.apt.fp4_linear_cpu_tiled``
  (csrc/fp4/fp4_cpu_tiled_layout.h).

``apt_ext.nn.FP4Linear`` builds and caches the one its device uses by itself for inference calls.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from apt_ext import _native
from apt_ext.fp4.format import get_format
from apt_ext.fp4.weight import FP4Weight

TILE_ROWS = 16    # weight rows per tile
STEP_COLS = 128   # columns per step
STEP_BYTES = 1024  # packed bytes of one (tile, step)
# tile_scales per (tile, step): (dtype, entries, elements per entry); an entry holds the scales of
# the lanes that use the same blocks (csrc/fp4/fp4_tiled_layout.h)
STEP_SCALES = {"nvfp4": (torch.uint8, 16, 8), "mxfp4": (torch.uint8, 8, 8), "nf4": (torch.float32, 8, 4)}
SUMSQ_GROUP = 16  # features per sum in fp4_linear_tiled_sumsq's out_sumsq (one tile's rows)


def sumsq_parts(y: torch.Tensor) -> torch.Tensor:
    """float32 [..., ceil(N / 16)]: the sums of squares of y [..., N] (its values as stored, in
    float32) over each 16 consecutive features, as ``fp4_linear_tiled_sumsq`` returns them for the
    next norm's ``rms_sumsq``."""
    n = y.shape[-1]
    parts = -(-n // SUMSQ_GROUP)
    yf = torch.nn.functional.pad(y.float(), (0, parts * SUMSQ_GROUP - n))
    return yf.square().unflatten(-1, (parts, SUMSQ_GROUP)).sum(-1)


def swiglu_rows(n: int, device: torch.device | str | None = None, inverse: bool = False) -> torch.Tensor:
    """int64 [n]: entry r is the weight row that row r of a copy in the SwiGLU order holds
    (``inverse``: entry w is the copy row that holds weight row w). A weight [gate; up] of n = 2F
    rows (F a multiple of 8) is stored so that each 16-row tile holds 8 gate rows and then the same
    8 up rows (tile t: gate rows 8t .. 8t + 7, up rows F + 8t ..), so that the rows one lane of the
    GEMV sums (g and g + 8 of a tile) are a gate and its up."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int, got {type(n).__name__}")
    if n <= 0 or n % (2 * 8) != 0:
        raise ValueError(f"n: the SwiGLU order takes gate and up rows 8 at a time: expected a positive "
                         f"multiple of 16, got {n}")
    r, half = torch.arange(n, device=device), n // 2
    if inverse:
        return r % half // 8 * TILE_ROWS + r // half * 8 + r % 8
    return (r % TILE_ROWS) // 8 * half + r // TILE_ROWS * 8 + r % 8


@dataclass(frozen=True)
class TiledFP4Weight:
    """A weight of logical shape ``shape`` = (N, K) in the tiled layout.

    tiles: uint8 [ceil(N/16), ceil(K/128), 1024]; tile_scales: [tiles, steps, 16 | 8 | 8, 8 | 8 | 4]
    (nvfp4 uint8, mxfp4 uint8, nf4 float32); out_scale: float32 [] applied to every sum.
    ``swiglu``: the rows are in the SwiGLU order (``swiglu_rows``), for ``swiglu_linear``.
    """

    tiles: torch.Tensor
    tile_scales: torch.Tensor
    out_scale: torch.Tensor
    fmt: str
    shape: tuple[int, int]
    swiglu: bool = False

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False,
               rms_eps: float | None = None, residual: torch.Tensor | None = None,
               rms_sumsq: torch.Tensor | None = None,
               return_sumsq: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x [..., K] -> x @ W.T + bias [..., N] in x's dtype (exact-erf GELU if ``gelu``). ``rms_eps``:
        x is RMS-normalised first (``x * rsqrt(mean(x**2, -1) + rms_eps)`` in float32: an RMSNorm
        whose weight was folded into W); ``rms_sumsq`` (with ``rms_eps``): float32 [..., P] whose
        sum over the last dimension is each row of x's sum of squares (as ``return_sumsq`` gives
        them), used instead of summing x's squares; ``residual`` [..., N] (x's dtype) is added
        last. ``return_sumsq``: returns (y, ``sumsq_parts(y)``), the sums taken by the kernel as it
        stores y (``fp4_linear_tiled_sumsq``). A copy in the SwiGLU order gathers the bias into its
        row order and the output back into the weight's (the residual is then added after the
        gather, and the sums taken by ``sumsq_parts``)."""
        if not isinstance(return_sumsq, bool):
            raise TypeError(f"return_sumsq: expected a bool, got {type(return_sumsq).__name__}")
        n, k = self.shape
        if not self.swiglu:
            op = torch.ops.apt.fp4_linear_tiled_sumsq if return_sumsq else torch.ops.apt.fp4_linear_tiled
            return op(x, self.tiles, self.tile_scales, self.out_scale, bias, self.fmt, n, k, gelu, rms_eps, residual,
                      rms_sumsq)
        if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (n,)):
            raise ValueError(f"bias: expected shape [{n}], got {_shape_or_type(bias)}")
        rows = swiglu_rows(n, self.tiles.device)
        y = torch.ops.apt.fp4_linear_tiled(x, self.tiles, self.tile_scales, self.out_scale,
                                           None if bias is None else bias.index_select(0, rows), self.fmt, n, k, gelu,
                                           rms_eps, None, rms_sumsq)
        y = y.index_select(-1, swiglu_rows(n, y.device, inverse=True))
        if residual is not None:
            if not isinstance(residual, torch.Tensor) or residual.shape != y.shape or residual.dtype != y.dtype:
                raise ValueError(f"residual: expected shape {list(y.shape)} of x's dtype {y.dtype}, got "
                                 f"{_shape_or_type(residual)}")
            y = y + residual
        return (y, sumsq_parts(y)) if return_sumsq else y

    def swiglu_linear(self, x: torch.Tensor, bias: torch.Tensor | None = None,
                      rms_eps: float | None = None, rms_sumsq: torch.Tensor | None = None) -> torch.Tensor:
        """x [..., K] -> silu(gate) * up [..., N / 2] in x's dtype, for a copy in the SwiGLU order of a
        weight [gate; up] (bias [N] in that order too): one fused kernel (CUDA, at most the GEMV's
        rows; past them the GEMM and then the SwiGLU). ``rms_eps``, ``rms_sumsq``: as ``linear``'s;
        on CUDA above 8 rows of 16-bit x the norm runs ahead of the kernel (``F.rms_norm``'s, x rounded to
        its dtype; ``rms_sumsq`` unread), faster there than the kernel's own (docs/fp4_gpu.md)."""
        if not self.swiglu:
            raise ValueError("swiglu_linear: this copy is not in the SwiGLU order; make it with "
                             "tile(weight, swiglu=True)")
        n, k = self.shape
        return torch.ops.apt.fp4_linear_tiled_swiglu(x, self.tiles, self.tile_scales, self.out_scale, bias,
                                                     self.fmt, n, k, rms_eps, rms_sumsq)

    def dequantize(self) -> torch.Tensor:
        """-> float32 [N, K], equal to the source FP4Weight's ``dequantize()``."""
        n, k = self.shape
        w = torch.ops.apt.fp4_untile(self.tiles, self.tile_scales, self.out_scale, self.fmt, n, k)
        return w.index_select(0, swiglu_rows(n, w.device, inverse=True)) if self.swiglu else w

    def to_weight(self) -> FP4Weight:
        """The canonical FP4Weight this copy was tiled from (``fp4_untile_packed``, on the copy's
        device): bit for bit for weights as ``quantize`` makes them; otherwise the canonical
        encoding of the same values (a block whose codes are all zero gets scale 0)."""
        n, k = self.shape
        packed, scales, tensor_scale = torch.ops.apt.fp4_untile_packed(self.tiles, self.tile_scales, self.out_scale,
                                                                       self.fmt, n, k)
        if self.swiglu:
            back = swiglu_rows(n, packed.device, inverse=True)
            packed, scales = packed.index_select(0, back), scales.index_select(0, back)
        return FP4Weight(packed, scales, tensor_scale, self.fmt, get_format(self.fmt).block_size, self.shape)


def _shape_or_type(t: object) -> str:
    """For error texts: a tensor's shape (and dtype), or the type of anything else."""
    return f"{list(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__


def tile(weight: FP4Weight, swiglu: bool = False) -> TiledFP4Weight:
    """The tiled copy of ``weight`` on its device (one pass over the weight; mxfp4 reads its
    exponent range back to the host). ``swiglu``: rows in the SwiGLU order (``swiglu_rows``; the
    weight is [gate; up], its rows a multiple of 16), for ``TiledFP4Weight.swiglu_linear``.
    Raises ValueError for scales the layout cannot hold exactly (a NaN nvfp4 scale, mxfp4
    exponents spanning more than 126 binades) and, with ``swiglu``, for other row counts."""
    if not isinstance(weight, FP4Weight):
        raise TypeError(f"weight: expected an FP4Weight, got {type(weight).__name__}")
    if not isinstance(swiglu, bool):
        raise TypeError(f"swiglu: expected a bool, got {type(swiglu).__name__}")
    packed, scales = weight.packed, weight.scales
    if swiglu:
        try:
            rows = swiglu_rows(weight.shape[0], packed.device)
        except ValueError as e:
            raise ValueError(f"weight: {weight.shape[0]} rows cannot be tiled in the SwiGLU order ({e})") from None
        packed, scales = packed.index_select(0, rows), scales.index_select(0, rows)
    tiles, tile_scales, out_scale = torch.ops.apt.fp4_tile(packed, scales, weight.tensor_scale, weight.fmt,
                                                           weight.block_size)
    return TiledFP4Weight(tiles, tile_scales, out_scale, weight.fmt, weight.shape, bool(swiglu))


@dataclass(frozen=True)
class CpuTiledFP4Weight:
    """A weight of logical shape ``shape`` = (N, K) in the CPU tiled layout (CPU tensors).

    tiles: uint8 [ceil(N/16), Kp/8, 64]; tile_scales: [tiles, Kp/block, 16] (nvfp4 and mxfp4 one
    byte per block, nf4 float32); out_scale: float32 [] applied to every sum (Kp = K padded to the
    block). As many bytes as the canonical tensors.
    """

    tiles: torch.Tensor
    tile_scales: torch.Tensor
    out_scale: torch.Tensor
    fmt: str
    shape: tuple[int, int]

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x [..., K] (CPU, float32/bfloat16/float16) -> x @ W.T + bias [..., N] in x's dtype."""
        n, k = self.shape
        return torch.ops.apt.fp4_linear_cpu_tiled.default(x, self.tiles, self.tile_scales, self.out_scale, bias,
                                                          self.fmt, n, k)

    @property
    def nbytes(self) -> int:
        """Bytes of the copy (tiles, scales and out_scale)."""
        return sum(t.numel() * t.element_size() for t in (self.tiles, self.tile_scales, self.out_scale))


def cpu_tile(weight: FP4Weight) -> CpuTiledFP4Weight:
    """The CPU tiled copy of ``weight`` (its tensors must be on the CPU): one pass, exact. Raises
    ValueError for scales the layout cannot hold (an nvfp4 scale that is NaN or negative, mxfp4
    exponents of nonzero blocks spanning more than 126 binades), as ``tile`` does."""
    if not isinstance(weight, FP4Weight):
        raise TypeError(f"weight: expected an FP4Weight, got {type(weight).__name__}")
    tiles, scales, out_scale = torch.ops.apt.fp4_cpu_tile(weight.packed, weight.scales, weight.tensor_scale,
                                                          weight.fmt, weight.block_size)
    return CpuTiledFP4Weight(tiles, scales, out_scale, weight.fmt, weight.shape)


def cpu_tiled_kernel_is_fast() -> bool:
    """Whether ``fp4_linear_cpu_tiled`` runs its AVX-512 kernel now (the FP4 CPU path in use,
    ``APT_FP4_CPU_ISA`` or the best this CPU supports, is ``avx512``; an unusable
    ``APT_FP4_CPU_ISA`` raises ValueError naming it). Its AVX2 and scalar versions are slower than
    ``fp4_linear``'s AVX2 kernel (docs/fp4.md), so FP4Linear does not use it there."""
    return _native._C.fp4.cpu_path() == "avx512"
