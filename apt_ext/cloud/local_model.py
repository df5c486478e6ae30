"""An APT checkpoint as a text-completion engine: the model ``apt-ext serve`` serves and the
local fallback of :class:`apt_ext.cloud.ChatBackend`.

A checkpoint directory is what ``apt-ext train`` / ``apt-ext demo`` write (``DIR/model/`` from
``APTModel.save_pretrained`` plus ``DIR/tokenizer.json``) or a ``save_pretrained`` directory
itself (tokenizer.json inside it or next to it; without one, a 256-id model uses the byte
tokenizer). Chat messages become one prompt, one ``"role: content"`` line per message followed
by ``"assistant:"`` (:meth:`LocalModel.chat_prompt`).

Several requests run as one batch (:meth:`LocalModel.run_batch`): prompts are left-padded
(position ids count real tokens, so padding does not change a row's result beyond float
rounding), every row stops at its own ``max_tokens``, stop string or EOS, and streaming rows get
their text as it is decoded.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from apt_ext.model.checkpoint import resolve_model_dir
from apt_ext.model.generation import left_pad

FINISH_STOP, FINISH_LENGTH = "stop", "length"


@dataclass
class GenerationRequest:
    """One prompt to continue. ``temperature`` 0 is greedy; ``on_text(delta)`` receives the
    text as it is produced (streaming). Filled in by the engine: ``text``,
    ``completion_tokens``, ``finish_reason``; ``cancelled`` (set by the caller) drops the row."""
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = None
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    cancelled: bool = False

    @property
    def sampling_key(self) -> tuple:
        """Requests with equal keys can share one batch (same decoding rule)."""
        return ("greedy",) if self.temperature == 0 else ("sample", float(self.temperature), float(self.top_p))


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class _Row:
    """Decodes one row's tokens to text as they arrive: holds back an unfinished UTF-8
    character and the last ``len(stop) - 1`` characters (a stop string may be starting)."""

    def __init__(self, req: GenerationRequest, decode: Callable[[list[int]], str], eos: int | None) -> None:
        self.req, self.decode, self.eos = req, decode, eos
        self.ids: list[int] = []
        self.sent = 0
        self.hold = max((len(s) for s in req.stop), default=1) - 1
        self.done = req.cancelled

    def push(self, token: int) -> bool:
        """Add one generated token; returns True once the row is finished."""
        if self.done:
            return True
        if self.req.cancelled:
            self.done = True
            return True
        if self.eos is not None and token == self.eos:
            return self._finish(self.decode(self.ids), FINISH_STOP)
        self.ids.append(token)
        text = self.decode(self.ids)
        cut = min((i for i in (text.find(s) for s in self.req.stop) if i >= 0), default=-1)
        if cut >= 0:
            return self._finish(text[:cut], FINISH_STOP)
        if len(self.ids) >= self.req.max_tokens:
            return self._finish(text, FINISH_LENGTH)
        safe = len(text.rstrip("\ufffd")) - self.hold
        if safe > self.sent:
            self._emit(text[self.sent:safe])
            self.sent = safe
        return False

    def close(self) -> None:
        """Generation ended without this row finishing (every other row stopped)."""
        if not self.done:
            self._finish(self.decode(self.ids), FINISH_LENGTH)

    def _finish(self, text: str, reason: str) -> bool:
        self.done = True
        if len(text) > self.sent:
            self._emit(text[self.sent:])
        self.req.text, self.req.completion_tokens, self.req.finish_reason = text, len(self.ids), reason
        return True

    def _emit(self, delta: str) -> None:
        if self.req.on_text is not None and not self.req.cancelled:
            self.req.on_text(delta)


class LocalModel:
    """A decoder-only APT model and its tokenizer, completing text on one device.

    ``complete`` / ``chat`` serve one request; ``run_batch`` serves several at once (the
    server's engine). Calls from several threads are serialised.
    """

    def __init__(self, model, tokenizer, name: str = "apt") -> None:
        from apt_ext.model import APTModel
        if not isinstance(model, APTModel):
            raise TypeError(f"model: expected an APTModel, got {type(model).__name__}")
        if not model.config.decoder_only:
            raise ValueError("model: serving needs a decoder-only APT model (config.decoder_only=True)")
        if not hasattr(tokenizer, "encode") or not hasattr(tokenizer, "decode"):
            raise TypeError("tokenizer: expected an object with encode(str) and decode(list[int])")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty str, got {name!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.device = next(model.parameters()).device
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, directory: str | Path, device: str | torch.device | None = None,
                        fp4: str | None = None, vgpu_config: dict | str | Path | None = None,
                        name: str | None = None) -> "LocalModel":
        """Load a checkpoint (see the module docstring) onto ``device`` (default:
        ``apt_ext.devices.get_device()``). ``fp4``: quantise the Linear layers to that format
        (nvfp4, mxfp4, nf4; the tied output head stays). ``vgpu_config``: a VGPUStack config
        (dict, JSON text or a JSON file) whose stack holds the weights (``apt_ext.vgpu.offload``)."""
        from apt_ext.model import APTModel
        model_dir = resolve_model_dir(directory)
        if device is None:
            from apt_ext.devices import get_device
            device = get_device()
        model = APTModel.from_pretrained(model_dir, device=device)
        if model.tokenizer is None and model.config.vocab_size != 256:
            raise FileNotFoundError(f"checkpoint: no tokenizer.json in {model_dir} or {model_dir.parent} "
                                    f"(a {model.config.vocab_size}-id model needs the tokenizer it was trained with)")
        tokenizer = model.text_tokenizer()
        if fp4 is not None:
            import apt_ext
            tied = model.config.tie_embeddings
            apt_ext.quantize_(model, fp4, filter_fn=(lambda m, fqn: fqn != "lm_head") if tied else None)
        if vgpu_config is not None:
            from apt_ext.vgpu import VGPUStack, offload
            offload(model, VGPUStack.from_config(_json_config(vgpu_config)))
        default_name = model_dir.parent.name if model_dir.name == "model" else model_dir.name
        return cls(model, tokenizer, name=name or default_name or "apt")

    # ---- text <-> tokens ------------------------------------------------------------------
    @property
    def max_seq_len(self) -> int:
        return self.model.config.max_seq_len

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (the config's BOS first when it has one)."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        bos = self.model.config.bos_token_id
        return ([bos] if bos is not None else []) + list(self.tokenizer.encode(text))

    @staticmethod
    def chat_prompt(messages: list[dict]) -> str:
        """``[{"role": r, "content": c}, ...]`` -> one prompt: ``"r: c"`` lines, then ``"assistant:"``."""
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages: expected a non-empty list of {'role', 'content'} dicts")
        lines = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"messages[{i}]: expected {{'role': str, 'content': str}}, got {m!r}")
            lines.append(f"{m['role']}: {m['content']}")
        return "\n".join(lines) + "\nassistant:"

    # ---- generation -----------------------------------------------------------------------
    def request(self, prompt: str, max_tokens: int = 16, temperature: float = 0.0, top_p: float = 1.0,
                stop: str | list[str] | tuple[str, ...] | None = None,
                on_text: Callable[[str], None] | None = None) -> GenerationRequest:
        """A validated request for ``prompt`` (ValueError naming the argument otherwise)."""
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens: expected an int >= 1, got {max_tokens!r}")
        if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise ValueError(f"temperature: expected a number in [0, 2], got {temperature!r}")
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ValueError(f"top_p: expected a number in (0, 1], got {top_p!r}")
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        if any(not isinstance(s, str) or not s for s in stops) or len(stops) > 4:
            raise ValueError(f"stop: expected up to 4 non-empty strings, got {stop!r}")
        ids = self.encode(prompt)
        if not ids:
            raise ValueError("prompt: empty (the model has no BOS token to start from)")
        if len(ids) + max_tokens > self.max_seq_len:
            raise ValueError(f"prompt: {len(ids)} prompt tokens + max_tokens {max_tokens} exceed the "
                             f"model's context of {self.max_seq_len} tokens")
        return GenerationRequest(ids, max_tokens, float(temperature), float(top_p), stops, on_text)

    def run_batch(self, requests: list[GenerationRequest], generator: torch.Generator | None = None) -> None:
        """Generate for all ``requests`` (equal ``sampling_key``) in one left-padded batch;
        fills each request's ``text``, ``completion_tokens`` and ``finish_reason``."""
        if not requests:
            return
        keys = {r.sampling_key for r in requests}
        if len(keys) != 1:
            raise ValueError(f"requests: one batch needs one decoding rule, got {sorted(keys)}")
        first = requests[0]
        eos = self.model.config.eos_token_id
        rows = [_Row(r, self.tokenizer.decode, eos) for r in requests]
        ids, mask = left_pad([r.prompt_ids for r in requests], self.model.config.pad_token_id or 0, self.device)

        def on_step(tokens: torch.Tensor) -> bool:
            return all([row.push(t) for row, t in zip(rows, tokens.tolist())])

        sampling = first.temperature > 0
        with self._lock:
            self.model.generate(ids, max(r.max_tokens for r in requests), do_sample=sampling,
                                temperature=first.temperature if sampling else 1.0,
                                top_p=first.top_p if sampling and first.top_p < 1 else None,
                                attention_mask=mask, generator=generator, on_step=on_step)
        for row in rows:
            row.close()

    def complete(self, prompt: str, max_tokens: int = 16, temperature: float = 0.0, top_p: float = 1.0,
                 stop: str | list[str] | None = None, on_text: Callable[[str], None] | None = None) -> Completion:
        """Continue ``prompt`` by up to ``max_tokens`` tokens (greedy when ``temperature`` is 0)."""
        req = self.request(prompt, max_tokens, temperature, top_p, stop, on_text)
        self.run_batch([req])
        return Completion(req.text, len(req.prompt_ids), req.completion_tokens, req.finish_reason)

    def chat(self, messages: list[dict], max_tokens: int = 16, temperature: float = 0.0, top_p: float = 1.0,
             stop: str | list[str] | None = None, on_text: Callable[[str], None] | None = None) -> Completion:
        """The assistant's reply to ``messages`` (see :meth:`chat_prompt`)."""
        return self.complete(self.chat_prompt(messages), max_tokens, temperature, top_p, stop, on_text)


def _json_config(cfg: dict | str | Path) -> dict:
    if isinstance(cfg, dict):
        return cfg
    text = Path(cfg).read_text() if os.path.isfile(str(cfg)) else str(cfg)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"vgpu_config: expected a dict, JSON text or a JSON file, got {str(cfg)[:80]!r} ({exc})") from None
