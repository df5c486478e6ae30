"""``KVCache``: the decoder state that incremental decoding (``APTModel.forward(cache=...)``,
``generate``) carries from one step to the next."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class KVCache:
    """Decoder state for incremental decoding: per-layer keys/values and autopoietic prefix
    sums, the cached length, which cached keys are real tokens (None: all), the next position
    id per row and (encoder-decoder) the encoder output and its mask."""
    layers: list[dict] = field(default_factory=list)
    length: int = 0
    key_valid: torch.Tensor | None = None   # bool [B, length] or None (all real)
    next_pos: torch.Tensor | None = None    # long [B]
    memory: torch.Tensor | None = None      # [B, S_src, D]
    memory_valid: torch.Tensor | None = None
