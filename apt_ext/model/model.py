"""The APT model (docs/contract.md §7), top to bottom: masks, attention, layers, APTModel.

Pre-LayerNorm Transformer. Decoder-only (``model(input_ids)``) or encoder-decoder
(``model(src, tgt)``); both return logits [B, T, vocab] in float32 (or the autocast dtype).
Attention is ``F.scaled_dot_product_attention``; every residual site is an
``apt_ext.nn.LeftSpinResidual`` (the native op ``torch.ops.apt.left_spin_residual``) chained by
an ``apt_ext.nn.LeftSpinChain``: encoder layer = self-attention, FFN; decoder layer =
self-attention, cross-attention, FFN. Each site hands its update du and its phi to the next
site of the same stack; the chain starts fresh in every forward and separately for the encoder
and the decoder (their sequences differ in length, so a row of one has no partner in the other).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from apt_ext.model.autopoietic import AutopoieticCorrection
from apt_ext.model.config import APTModelConfiguration
from apt_ext.left_spin._ops import left_spin_residual
from apt_ext.model.generation import DEFAULT_MAX_NEW_TOKENS, generate, generate_text
from apt_ext.model.hooks import run_init_hooks
from apt_ext.model.kv_cache import KVCache
from apt_ext.nn.left_spin import LeftSpinChain, LeftSpinResidual


# --------------------------------------------------------------------------------------
# Masks and cache
# --------------------------------------------------------------------------------------
@dataclass
class _Masks:
    """What attention needs to know about one stack's sequence.

    ``self_mask``: bool [B, 1, T, S] (True = may attend) or None; ``is_causal``: use SDPA's
    built-in causal mask (only when ``self_mask`` is None and there is no cache offset);
    ``valid``: bool [B, T] real tokens of the queries, None when all are real (for the
    autopoietic prefix mean); ``cross_mask``: bool [B, 1, 1, S_src] for cross-attention or None.
    """
    self_mask: torch.Tensor | None
    is_causal: bool
    valid: torch.Tensor | None
    cross_mask: torch.Tensor | None = None


def _pad_safe(mask: torch.Tensor, offset: int) -> torch.Tensor:
    """Let every query attend to itself, so a padding query never has an all-False row (NaN).
    Real queries never see padding keys either way. mask: [B, 1, T, S], query i is key offset+i."""
    t, s = mask.shape[-2:]
    eye = torch.zeros(t, s, dtype=torch.bool, device=mask.device)
    idx = torch.arange(t, device=mask.device)
    eye[idx, idx + offset] = True
    return mask | eye


# --------------------------------------------------------------------------------------
# Residual sites
# --------------------------------------------------------------------------------------
class ResidualSite(LeftSpinResidual):
    """A left-spin residual site configured from the model config (plain ``u + du`` when
    ``use_left_spin`` is off). Under autocast the branch output du is bf16 while the stream
    stays float32: the op reads du in bf16 and returns the float32 stream (no cast kernels)."""

    def __init__(self, cfg: APTModelConfiguration) -> None:
        super().__init__(params=cfg.left_spin_params, enabled=cfg.use_left_spin,
                         compiled_form=cfg.left_spin_compiled_form)


# --------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head attention through SDPA. Self-attention (``cross=False``, with the optional
    autopoietic correction) or cross-attention to the encoder output (``cross=True``)."""

    def __init__(self, cfg: APTModelConfiguration, cross: bool) -> None:
        super().__init__()
        d = cfg.d_model
        self.cfg, self.cross = cfg, cross
        self.h, self.hd = cfg.num_heads, cfg.head_dim
        if cross:
            self.q = nn.Linear(d, d, bias=cfg.bias)
            self.kv = nn.Linear(d, 2 * d, bias=cfg.bias)
        else:
            self.qkv = nn.Linear(d, 3 * d, bias=cfg.bias)
        self.proj = nn.Linear(d, d, bias=cfg.bias)
        self.auto = (AutopoieticCorrection(d, cfg.num_heads, cfg.autopoietic_rank, cfg.autopoietic_fused_projection)
                     if cfg.use_autopoietic and not cross else None)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, hd]
        b, t, _ = x.shape
        return x.view(b, t, self.h, self.hd).transpose(1, 2)

    def forward(self, x: torch.Tensor, masks: _Masks, memory: torch.Tensor | None = None,
                cache: dict | None = None) -> torch.Tensor:
        b, t, d = x.shape
        if self.cross:
            q = self._heads(self.q(x))
            if cache is not None and "k" in cache:
                k, v = cache["k"], cache["v"]
            else:
                k, v = (self._heads(z) for z in self.kv(memory).split(d, dim=-1))
                if cache is not None:
                    cache["k"], cache["v"] = k, v
            attn_mask, is_causal = masks.cross_mask, False
        else:
            if self.auto is not None:  # q/k/v, the gate's source and x U, as one matmul where it can
                qkv, gate_src, xu, projected = self.auto.project(x, self.qkv, cached=cache is not None)
            else:
                qkv = self.qkv(x)
            q, k, v = (self._heads(z) for z in qkv.split(d, dim=-1))
            if cache is not None:
                if "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
            attn_mask, is_causal = masks.self_mask, masks.is_causal
        drop = self.cfg.dropout if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop, is_causal=is_causal)
        h = h.transpose(1, 2)  # [B, T, H, d_h]: token-major, as the output projection and delta read it
        if self.auto is not None:
            state = cache.get("auto") if cache is not None else None
            delta, new_state = self.auto(xu, gate_src, projected, masks.valid, state)
            if cache is not None:
                cache["auto"] = new_state
            delta = delta.to(h.dtype)  # [B, T, H, d_h], as h: the combination copies nothing
            c = self.cfg
            if c.use_left_spin:  # the left-spin gate with d = ||delta||/||h||, no acceleration term
                h, _ = left_spin_residual(h, delta, params=c.left_spin_params)
            else:
                h = h + c.left_spin_alpha * math.tanh(c.left_spin_tau) * delta
        return self.proj(h.reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, cfg: APTModelConfiguration) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------
class EncoderLayer(nn.Module):
    """Pre-LN: x = chain(x, SelfAttn(LN x)); x = chain(x, FFN(LN x))."""

    def __init__(self, cfg: APTModelConfiguration) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = Attention(cfg, cross=False)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.ffn = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.res_attn, self.res_ffn = ResidualSite(cfg), ResidualSite(cfg)

    def forward(self, x: torch.Tensor, masks: _Masks, chain: LeftSpinChain) -> torch.Tensor:
        x = self.res_attn(x, self.drop(self.attn(self.ln1(x), masks)), chain)
        return self.res_ffn(x, self.drop(self.ffn(self.ln2(x))), chain)


class DecoderLayer(nn.Module):
    """Pre-LN: causal self-attention, cross-attention (encoder-decoder only), FFN."""

    def __init__(self, cfg: APTModelConfiguration) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = Attention(cfg, cross=False)
        if not cfg.decoder_only:
            self.ln_cross = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
            self.cross = Attention(cfg, cross=True)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.ffn = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.res_attn, self.res_ffn = ResidualSite(cfg), ResidualSite(cfg)
        if not cfg.decoder_only:
            self.res_cross = ResidualSite(cfg)

    def forward(self, x: torch.Tensor, masks: _Masks, chain: LeftSpinChain, memory: torch.Tensor | None,
                cache: dict | None) -> torch.Tensor:
        x = self.res_attn(x, self.drop(self.attn(self.ln1(x), masks, cache=None if cache is None else cache["self"])),
                          chain)
        if memory is not None:
            x = self.res_cross(x, self.drop(self.cross(self.ln_cross(x), masks, memory,
                                                       cache=None if cache is None else cache["cross"])), chain)
        return self.res_ffn(x, self.drop(self.ffn(self.ln2(x))), chain)


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------
class APTModel(nn.Module):
    """APT Transformer. ``model(input_ids)`` (decoder-only) or ``model(src, tgt)``
    (encoder-decoder) -> logits [B, T, vocab_size].

    Token ids are int64 [B, T]; ``attention_mask`` / ``tgt_attention_mask`` are [B, T] with
    1/True for real tokens (default: ``ids != pad_token_id`` when ``pad_token_id`` is set,
    else all real). Position ids count real tokens only, so left padding does not shift them.

    ``tokenizer``: an object with ``encode(str) -> list[int]`` and ``decode(list[int]) -> str``
    (None until set; ``from_pretrained`` loads the one saved with the model, the trainer sets
    its own) that lets ``generate`` take and return text.
    """

    def __init__(self, config: APTModelConfiguration) -> None:
        super().__init__()
        if not isinstance(config, APTModelConfiguration):
            raise TypeError(f"config: expected an APTModelConfiguration, got {type(config).__name__}")
        self.config = cfg = config
        self.tokenizer = None
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        if not cfg.decoder_only:
            self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_encoder_layers))
            self.ln_enc = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_decoder_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.dbc_dac = None
        if cfg.use_dbc_dac:
            from apt_ext.model.dbc_dac import DBCDAC
            self.dbc_dac = DBCDAC(self.named_parameters(), min_numel=cfg.dbc_min_numel,
                                  rank_ratio=cfg.dbc_rank_ratio, eps=cfg.dbc_eps, seed=cfg.dbc_seed)
        if cfg.use_fp4 is not None:
            import apt_ext
            apt_ext.quantize_(self, cfg.use_fp4,
                              filter_fn=(lambda m, fqn: fqn != "lm_head") if cfg.tie_embeddings else None)
        run_init_hooks(self)

    def _init_weights(self) -> None:
        std = self.config.init_std
        n_sites = 2 * len(getattr(self, "encoder", ())) + (2 if self.config.decoder_only else 3) * len(self.decoder)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                # residual-branch outputs scaled down with depth (GPT-2 style)
                scale = 1.0 / math.sqrt(n_sites) if name.endswith(("proj.weight", "down.weight")) else 1.0
                nn.init.normal_(p, 0.0, std * scale)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    # ---- masks -------------------------------------------------------------------------
    def _valid(self, ids: torch.Tensor, mask: torch.Tensor | None, name: str) -> torch.Tensor | None:
        """bool [B, T] real-token mask, or None when every token is real (no data-dependent
        checks on that path, so torch.compile sees one graph)."""
        if mask is None:
            return None if self.config.pad_token_id is None else ids != self.config.pad_token_id
        if mask.shape != ids.shape:
            raise ValueError(f"{name}: expected shape {tuple(ids.shape)} like the token ids, got {tuple(mask.shape)}")
        return mask.to(torch.bool)

    def _check_ids(self, ids: torch.Tensor, name: str) -> None:
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"{name}: expected a LongTensor [B, T], got {type(ids).__name__}")
        if ids.dtype not in (torch.int64, torch.int32) or ids.dim() != 2 or 0 in ids.shape:
            raise ValueError(f"{name}: expected int64 token ids of shape [B, T] with B, T >= 1, "
                             f"got {ids.dtype} {tuple(ids.shape)}")
        if not torch.compiler.is_compiling() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise ValueError(f"{name}: token ids must lie in [0, {self.config.vocab_size}), got "
                             f"[{int(ids.min())}, {int(ids.max())}]")

    def _embed(self, ids: torch.Tensor, valid: torch.Tensor | None, start: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token + position embedding; positions count real tokens from ``start`` (per row).
        Returns (x [B, T, D], next start [B])."""
        b, t = ids.shape
        if valid is None:
            pos = torch.arange(t, device=ids.device).expand(b, t)
            count = torch.full((b,), t, device=ids.device, dtype=torch.long)
        else:
            pos = (torch.cumsum(valid.long(), dim=1) - 1).clamp_min(0)
            count = valid.long().sum(1)
        if start is not None:
            pos = pos + start.unsqueeze(1)
            last = int(pos.max())
        else:
            last = t - 1 if valid is None else int(pos.max())
        if last >= self.config.max_seq_len:
            raise ValueError(f"sequence: position {last} exceeds max_seq_len={self.config.max_seq_len}")
        nxt = count if start is None else start + count
        return self.drop(self.tok_emb(ids) + self.pos_emb(pos)), nxt

    # ---- encoder / decoder ---------------------------------------------------------------
    def encode(self, src: torch.Tensor, attention_mask: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """src [B, S] -> (memory [B, S, D], valid [B, S] bool or None when all tokens are real)."""
        if self.config.decoder_only:
            raise RuntimeError("encode: this is a decoder-only model (config.decoder_only=True)")
        self._check_ids(src, "src")
        valid = self._valid(src, attention_mask, "attention_mask")
        self_mask = None
        if valid is not None:
            if not bool(valid.any(dim=1).all()):
                raise ValueError("attention_mask: every source row needs at least one real token")
            self_mask = _pad_safe(valid[:, None, None, :].expand(-1, 1, src.shape[1], -1), 0)
        x, _ = self._embed(src, valid, None)
        masks = _Masks(self_mask=self_mask, is_causal=False, valid=valid)
        chain = LeftSpinChain()
        for layer in self.encoder:
            x = layer(x, masks, chain)
        return self.ln_enc(x), valid

    def decode(self, ids: torch.Tensor, valid: torch.Tensor | None, memory: torch.Tensor | None,
               memory_valid: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        """Decoder stack + head: ids [B, T] -> logits [B, T, V]; updates ``cache`` in place."""
        b, t = ids.shape
        past = 0 if cache is None else cache.length
        x, nxt = self._embed(ids, valid, None if cache is None else cache.next_pos)
        key_valid = valid
        if past and (valid is not None or cache.key_valid is not None):
            def ones(n: int) -> torch.Tensor:
                return torch.ones(b, n, dtype=torch.bool, device=ids.device)
            key_valid = torch.cat([cache.key_valid if cache.key_valid is not None else ones(past),
                                   valid if valid is not None else ones(t)], dim=1)
        causal = None
        if past == 0 or t > 1:
            causal = torch.ones(t, past + t, dtype=torch.bool, device=ids.device).tril(diagonal=past)
        if key_valid is None:
            # all real: SDPA's own causal mask without a cache; none for a single new token
            self_mask, is_causal = (None, True) if past == 0 else (None if t == 1 else causal[None, None], False)
        else:
            full = key_valid[:, None, None, :] if causal is None else causal[None, None] & key_valid[:, None, None, :]
            self_mask, is_causal = _pad_safe(full, past), False
        cross = memory_valid[:, None, None, :] if memory_valid is not None else None
        masks = _Masks(self_mask=self_mask, is_causal=is_causal, valid=valid, cross_mask=cross)
        if cache is not None:
            if not cache.layers:
                cache.layers = [{"self": {}, "cross": {}} for _ in self.decoder]
            cache.length, cache.key_valid, cache.next_pos = past + t, key_valid, nxt
        chain = LeftSpinChain()
        for i, layer in enumerate(self.decoder):
            x = layer(x, masks, chain, memory, None if cache is None else cache.layers[i])
        return self.lm_head(self.ln_f(x))

    def forward(self, input_ids: torch.Tensor, tgt: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor | None = None, tgt_attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        """Decoder-only: ``model(input_ids, attention_mask=...)``. Encoder-decoder:
        ``model(src, tgt, attention_mask=src_mask, tgt_attention_mask=...)``. ``cache``
        (a KVCache, updated in place) continues a sequence from where the cache ends; for an
        encoder-decoder model the encoder runs on the first call only."""
        self._warn_dbc_unattached()
        cfg = self.config
        if cfg.decoder_only:
            if tgt is not None:
                raise ValueError("tgt: a decoder-only model takes model(input_ids); got a second sequence")
            self._check_ids(input_ids, "input_ids")
            return self.decode(input_ids, self._valid(input_ids, attention_mask, "attention_mask"), None, None, cache)
        if tgt is None:
            raise ValueError("tgt: this is an encoder-decoder model (config.decoder_only=False): call "
                             "model(src, tgt) with the decoder input as tgt (the target sequence shifted right, "
                             "starting with a start token), or build it with APTModelConfiguration(decoder_only=True, "
                             "...) to call model(input_ids)")
        self._check_ids(tgt, "tgt")
        if cache is not None and cache.memory is not None:
            memory, mvalid = cache.memory, cache.memory_valid
        else:
            memory, mvalid = self.encode(input_ids, attention_mask)
            if cache is not None:
                cache.memory, cache.memory_valid = memory, mvalid
        return self.decode(tgt, self._valid(tgt, tgt_attention_mask, "tgt_attention_mask"), memory, mvalid, cache)

    # ---- training helpers -------------------------------------------------------------------
    def configure_optimizers(self, lr: float = 3e-4, weight_decay: float = 0.1,
                             betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices only (the fused CUDA kernel when every parameter is
        on a CUDA device); attaches DBC-DAC when ``use_dbc_dac``."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        fused = bool(params) and all(p.is_cuda for p in params)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas, fused=fused)
        if self.dbc_dac is not None:
            self.dbc_dac.attach(opt)
        return opt

    def _warn_dbc_unattached(self) -> None:
        if (self.dbc_dac is not None and self.training and torch.is_grad_enabled()
                and not self.dbc_dac.attached and not getattr(self, "_dbc_warned", False)):
            self._dbc_warned = True
            warnings.warn("use_dbc_dac=True but DBC-DAC is not attached to an optimizer: build it with "
                          "model.configure_optimizers() or call model.dbc_dac.attach(optimizer)", stacklevel=3)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- generation, save / load --------------------------------------------------------
    def generate(self, input_ids: torch.Tensor | str | list[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 **kwargs) -> torch.Tensor | str | list[str]:
        """Token ids [B, T] -> ids [B, T + new] (:func:`apt_ext.model.generation.generate`), or
        text -> generated text, a str or a list of str (:func:`apt_ext.model.generation.generate_text`,
        needs ``text_tokenizer()``)."""
        if isinstance(input_ids, str) or (isinstance(input_ids, (list, tuple)) and input_ids
                                          and all(isinstance(p, str) for p in input_ids)):
            return generate_text(self, input_ids, max_new_tokens, **kwargs)
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids: expected token ids (a LongTensor [B, T]), a str or a list of str, "
                            f"got {type(input_ids).__name__}")
        return generate(self, input_ids, max_new_tokens, **kwargs)

    def text_tokenizer(self):
        """The tokenizer ``generate`` uses for text: ``self.tokenizer``, else the byte tokenizer
        for a 256-id model (UTF-8 bytes are its ids); ValueError saying what to do otherwise."""
        if self.tokenizer is not None:
            return self.tokenizer
        if self.config.vocab_size == 256:
            from apt_ext.train.data import ByteTokenizer
            return ByteTokenizer()
        raise ValueError(f"prompts: text needs a tokenizer, and this {self.config.vocab_size}-id model has none: set "
                         "model.tokenizer (an object with encode(str) and decode(ids)), load it with "
                         "APTModel.from_pretrained from a directory that has its tokenizer.json, or pass token ids")

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (weights, FP4 buffers) to directory,
        and ``tokenizer.json`` when ``self.tokenizer`` is set."""
        from safetensors.torch import save_model
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.config.save(d / "config.json")
        save_model(self, str(d / "model.safetensors"))
        if self.tokenizer is not None:
            self.tokenizer.save(d / "tokenizer.json")

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "APTModel":
        """Rebuild a model saved by ``save_pretrained`` (strict: every tensor must match).

        ``directory``: the ``save_pretrained`` directory or a run directory holding it as
        ``model/`` (what ``apt-ext train`` writes). Linear layers saved in FP4 (``use_fp4``,
        ``apt_ext.quantize_``, ``vb``) are rebuilt as FP4Linear of the saved format before loading,
        so any saved model loads, whatever ``vb`` is enabled. ``tokenizer.json`` in the directory
        or next to it becomes ``model.tokenizer``."""
        from safetensors.torch import load_model

        import apt_ext
        from apt_ext.model.checkpoint import find_tokenizer, fp4_layers, resolve_model_dir
        d = resolve_model_dir(directory)
        model = cls(APTModelConfiguration.load(d / "config.json"))
        saved_fp4 = fp4_layers(d / "model.safetensors")
        for fmt in sorted(set(saved_fp4.values())):
            apt_ext.quantize_(model, fmt, filter_fn=lambda m, fqn: saved_fp4.get(fqn) == fmt)
        load_model(model, str(d / "model.safetensors"), strict=True, device=str(device))
        model.tokenizer = find_tokenizer(d)
        return model.to(device)
