"""``FP4Weight``: a quantised [N, K] weight and ``quantize(w, fmt)`` that makes one."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from apt_ext.fp4.format import DEFAULT_FORMAT, block_size_for


@dataclass(frozen=True)
class FP4Weight:
    """A 4-bit weight of logical shape ``shape`` = (N, K) (docs/contract.md §3).

    packed: uint8 [N, Kp/2]; scales: [N, Kp/block_size]; tensor_scale: float32 [] (nvfp4's
    global scale, 1.0 for the others). Kp is K rounded up to a multiple of block_size. A ``shape``
    that is not two positive ints raises ValueError.
    """

    packed: torch.Tensor
    scales: torch.Tensor
    tensor_scale: torch.Tensor
    fmt: str
    block_size: int
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        shape = self.shape
        if (not isinstance(shape, (tuple, list)) or len(shape) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in shape)):
            raise ValueError(f"shape: expected (N, K), two positive ints, got {shape!r}")

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """-> [N, K] of ``dtype`` (the logical K, padding dropped). ValueError when ``shape`` does
        not fit the packed tensor ([N, Kp/2], Kp: K rounded up to the block)."""
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype: expected a torch.dtype, got {type(dtype).__name__}")
        w = torch.ops.apt.fp4_dequantize(self.packed, self.scales, self.tensor_scale, self.fmt,
                                         self.block_size, dtype)
        n, k = self.shape
        if w.shape[0] != n or not w.shape[1] - self.block_size < k <= w.shape[1]:
            raise ValueError(f"shape: expected ({w.shape[0]}, K) with K in ({w.shape[1] - self.block_size}, "
                             f"{w.shape[1]}] to match packed {tuple(self.packed.shape)}, got {self.shape}")
        return w[:, :k]

    @property
    def nbytes(self) -> int:
        """Bytes of packed codes plus scales plus the tensor scale."""
        return sum(t.numel() * t.element_size() for t in (self.packed, self.scales, self.tensor_scale))

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / (self.shape[0] * self.shape[1])

    def to(self, device: torch.device | str) -> "FP4Weight":
        return FP4Weight(self.packed.to(device), self.scales.to(device), self.tensor_scale.to(device),
                         self.fmt, self.block_size, self.shape)


def quantize(w: torch.Tensor, fmt: str = DEFAULT_FORMAT, block_size: int | None = None) -> FP4Weight:
    """Quantise a float weight ``w`` [N, K] (float32/bfloat16/float16) to ``fmt``.

    Raises ValueError for an unknown fmt, a block size the fmt does not allow, a weight that is
    not 2-D or is empty, or NaN/Inf values; TypeError for a non-float dtype.
    """
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w: expected a torch.Tensor, got {type(w).__name__}")
    bs = block_size_for(fmt, block_size)
    packed, scales, ts = torch.ops.apt.fp4_quantize(w.detach(), fmt, bs)
    return FP4Weight(packed, scales, ts, fmt, bs, (int(w.shape[0]), int(w.shape[1])))
