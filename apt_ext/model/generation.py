"""Autoregressive generation for APTModel: greedy, temperature, top-k, top-p, with a KV cache;
token ids in and out (``generate``) or text in and out (``generate_text``)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from apt_ext.model.kv_cache import KVCache

if TYPE_CHECKING:  # the model calls generate(); generate only needs its type for annotations
    from apt_ext.model.model import APTModel

#: new tokens when ``model.generate`` is called without ``max_new_tokens``
DEFAULT_MAX_NEW_TOKENS = 32


def left_pad(rows: Sequence[Sequence[int]], pad: int, device: torch.device | str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token id lists of different lengths -> (ids int64 [B, T] left-padded with ``pad``,
    attention mask bool [B, T], or None when every row has length T)."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device)
    if all(len(r) == width for r in rows):
        return ids, None
    mask = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rows], dtype=torch.bool, device=device)
    return ids, mask


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


def generate_text(model: APTModel, prompts: str | Sequence[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                  **kwargs) -> str | list[str]:
    """Continue ``prompts`` (a str, or a list of str run as one left-padded batch) with the
    model's tokenizer (``model.text_tokenizer()``); returns the generated text (without the
    prompt), a str for a str and a list for a list. The text of a row ends before its EOS, and
    generated pad ids (the config's ``pad_token_id``, else 0, the id the batch is left-padded
    with) are not text and are left out: for a byte-level model 0 would be a NUL character,
    which no AIM-Memory store keeps.

    Decoder-only: the prompt (after the config's BOS, if set) is the decoder input.
    Encoder-decoder: the prompt is the source and the decoder starts from ``bos_token_id``
    (the config must set it). ``kwargs``: the sampling arguments of :func:`generate`
    (``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``eos_token_id``, ``use_cache``,
    ``generator``); token-level arguments (``attention_mask``, ``src``, ...) are refused.
    """
    single = isinstance(prompts, str)
    items = [prompts] if single else prompts
    if (not isinstance(items, Sequence) or isinstance(items, (bytes, bytearray)) or not items
            or not all(isinstance(p, str) for p in items)):
        raise TypeError(f"prompts: expected a str or a non-empty list of str, got {type(prompts).__name__}")
    refused = sorted(set(kwargs) & {"attention_mask", "src", "src_attention_mask", "on_step"})
    if refused:
        raise TypeError(f"{refused[0]}: not accepted with text prompts (pass token ids to use it)")
    tok = model.text_tokenizer()
    cfg = model.config
    bos = cfg.bos_token_id
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    device = next(model.parameters()).device
    rows = [list(tok.encode(p)) for p in items]
    if cfg.decoder_only:
        rows = [([bos] if bos is not None else []) + r for r in rows]
    for i, r in enumerate(rows):
        if not r:
            raise ValueError(f"prompts[{i}]: empty, and the config has no bos_token_id to start from")
        need = len(r) + max_new_tokens if cfg.decoder_only else max(len(r), 1 + max_new_tokens)
        if need > cfg.max_seq_len:
            raise ValueError(f"prompts[{i}]: {len(r)} prompt tokens and max_new_tokens={max_new_tokens} exceed the "
                             f"model's max_seq_len={cfg.max_seq_len}")
    ids, mask = left_pad(rows, pad, device)
    if cfg.decoder_only:
        out = generate(model, ids, max_new_tokens, attention_mask=mask, **kwargs)
    else:
        if bos is None:
            raise ValueError("prompts: an encoder-decoder model generates text from a decoder start token; "
                             "set bos_token_id in its APTModelConfiguration")
        start = torch.full((len(rows), 1), bos, dtype=torch.long, device=device)
        out = generate(model, start, max_new_tokens, src=ids, src_attention_mask=mask, **kwargs)
    new = out[:, ids.shape[1] if cfg.decoder_only else 1:].tolist()
    eos = kwargs.get("eos_token_id", cfg.eos_token_id)
    texts = [tok.decode([t for t in (row[:row.index(eos)] if eos is not None and eos in row else row) if t != pad])
             for row in new]
    return texts[0] if single else texts
