"""Autoregressive generation for APTModel: greedy, temperature, top-k, top-p, with a KV cache."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from apt_ext.model.kv_cache import KVCache

if TYPE_CHECKING:  # the model calls generate(); generate only needs its type for annotations
    from apt_ext.model.model import APTModel


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set logits [B, V] outside the top-k / nucleus (top-p) set to -inf."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the first always stays)
        drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def generate(model: APTModel, input_ids: torch.Tensor, max_new_tokens: int, *, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             eos_token_id: int | None = None, attention_mask: torch.Tensor | None = None,
             src: torch.Tensor | None = None, src_attention_mask: torch.Tensor | None = None,
             use_cache: bool = True, generator: torch.Generator | None = None,
             on_step: Callable[[torch.Tensor], bool | None] | None = None) -> torch.Tensor:
    """Continue ``input_ids`` [B, T] by ``max_new_tokens`` tokens; returns [B, T + new].

    Decoder-only: ``input_ids`` is the prompt (``attention_mask`` marks left padding).
    Encoder-decoder: ``src`` is the source and ``input_ids`` the decoder prefix (e.g. a BOS
    column). Greedy unless ``do_sample``; sampling divides logits by ``temperature`` and keeps
    the ``top_k`` / ``top_p`` sets. Rows that produced ``eos_token_id`` (default: the config's)
    keep emitting it. ``use_cache=False`` recomputes the whole sequence every step (same result).
    ``on_step(new_tokens)`` is called after every step with that step's tokens (int64 [B]);
    returning True ends generation there (streaming and per-request stopping in a server).
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an int >= 0, got {max_new_tokens!r}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature: expected > 0 when sampling, got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k: expected an int >= 1, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p: expected in (0, 1], got {top_p}")
    cfg = model.config
    if cfg.decoder_only and src is not None:
        raise ValueError("src: a decoder-only model generates from input_ids only")
    if not cfg.decoder_only and src is None:
        raise ValueError("src: an encoder-decoder model needs the source sequence")
    if input_ids.dim() != 2 or input_ids.shape[1] < 1:
        raise ValueError(f"input_ids: expected [B, T] with T >= 1, got {tuple(input_ids.shape)}")
    eos = cfg.eos_token_id if eos_token_id is None else eos_token_id
    was_training = model.training
    model.eval()
    ids = input_ids
    mask = (attention_mask if attention_mask is not None else torch.ones_like(ids)).to(torch.bool)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    cache = KVCache() if use_cache else None
    step_ids, step_mask = ids, mask
    try:
        for _ in range(max_new_tokens):
            if use_cache:
                logits = _forward(model, step_ids, step_mask, src, src_attention_mask, cache)
            else:
                logits = _forward(model, ids, mask, src, src_attention_mask, None)
            logits = logits[:, -1].float()
            if do_sample:
                probs = torch.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                nxt = logits.argmax(dim=-1)
            if eos is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
                done |= nxt == eos
            step_ids, step_mask = nxt[:, None], torch.ones_like(nxt[:, None], dtype=torch.bool)
            ids, mask = torch.cat([ids, step_ids], 1), torch.cat([mask, step_mask], 1)
            if on_step is not None and on_step(nxt):
                break
            if eos is not None and bool(done.all()):
                break
    finally:
        model.train(was_training)
    return ids


def _forward(model, ids, mask, src, src_mask, cache):
    if model.config.decoder_only:
        return model(ids, attention_mask=mask, cache=cache)
    return model(src, ids, attention_mask=src_mask, tgt_attention_mask=mask, cache=cache)
