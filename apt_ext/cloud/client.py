"""``ChatBackend``: chat and text completion against any OpenAI-compatible endpoint (the
``openai`` package), with a local fallback model and call statistics.

    from apt_ext.cloud import ChatBackend, LocalModel
    llm = ChatBackend("modelarts", model="DeepSeek-V3", fallback=LocalModel.from_checkpoint("run"))
    llm.chat([{"role": "user", "content": "Hello"}], max_tokens=64)
    for piece in llm.chat(messages, stream=True): print(piece, end="")
    llm.get_stats()  # calls, failures, fallbacks, retries, tokens in/out, latency p50/p95

Retries: the ``openai`` client's own, ``max_retries`` times on connection errors, 408, 409,
429 and 5xx, with exponential backoff and jitter (it honours ``Retry-After``). When the endpoint
still fails, is unreachable, or the preset has no key, the call runs on ``fallback`` (a
:class:`LocalModel`) and counts as a fallback; without a fallback it raises
:class:`CloudBackendError`. A stream that breaks part-way is continued locally from the text
already received. Decoding defaults to greedy (``temperature=0``).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from apt_ext.cloud import report
from apt_ext.cloud.local_model import LocalModel
from apt_ext.cloud.presets import get_preset
from apt_ext.cloud.stats import CallStats

log = logging.getLogger("apt_ext.cloud")

COUNTERS = ("calls", "endpoint_calls", "failures", "fallbacks", "http_requests", "api_requests",
            "tokens_in", "tokens_out")


class CloudBackendError(RuntimeError):
    """The endpoint failed (or has no credentials) and no fallback model is set."""


class ChatBackend:
    """An OpenAI-compatible chat endpoint with a local fallback.

    ``preset``: "modelarts" (Huawei Cloud ModelArts MaaS), "openai" or "local" (an
    ``apt-ext serve``); see :mod:`apt_ext.cloud.presets` for URLs and key variables.
    ``base_url`` / ``api_key`` / ``model`` override the preset; ``timeout`` is seconds per
    HTTP phase; ``fallback``: a LocalModel or a checkpoint directory.
    """

    def __init__(self, preset: str = "local", *, base_url: str | None = None, api_key: str | None = None,
                 model: str | None = None, timeout: float = 30.0, max_retries: int = 2,
                 fallback: LocalModel | str | Path | None = None) -> None:
        p = get_preset(preset)
        if base_url is not None and (not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))):
            raise ValueError(f"base_url: expected an http(s):// URL, got {base_url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries: expected an int >= 0, got {max_retries!r}")
        if fallback is not None and not isinstance(fallback, (LocalModel, str, Path)):
            raise TypeError(f"fallback: expected a LocalModel or a checkpoint directory, got {type(fallback).__name__}")
        url, _ = p.env(p.url_env)
        key, key_var = p.env(p.key_env)
        env_model, _ = p.env(p.model_env)
        self.preset = p.name
        self.base_url = (base_url or url or p.base_url).rstrip("/")
        self.api_key = api_key or key
        self.key_source = "api_key argument" if api_key else key_var
        self.model = model or env_model or p.default_model
        self.timeout, self.max_retries = float(timeout), max_retries
        self.fallback = LocalModel.from_checkpoint(fallback, device="cpu") if isinstance(fallback, (str, Path)) else fallback
        self.unavailable: str | None = None
        if p.key_required and not self.api_key:
            self.unavailable = (f"no API key for preset {p.name!r}: set {' or '.join(p.key_env)} "
                                f"or pass api_key=")
        self.last_source: str | None = None   # "endpoint" or "fallback": who answered the last call
        self._stats = CallStats(COUNTERS)
        self._client = None
        report.register(self)

    # ---- public API -----------------------------------------------------------------------
    def chat(self, messages: list[dict], *, max_tokens: int = 64, temperature: float = 0.0,
             top_p: float = 1.0, stop: str | list[str] | None = None, stream: bool = False) -> str | Iterator[str]:
        """The reply to ``messages`` ([{"role", "content"}, ...]); with ``stream=True`` an
        iterator of text pieces."""
        LocalModel.chat_prompt(messages)   # validates the messages
        return self._dispatch("chat", messages, max_tokens, temperature, top_p, stop, stream)

    def complete(self, prompt: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
                 stop: str | list[str] | None = None, stream: bool = False) -> str | Iterator[str]:
        """The continuation of ``prompt`` (``/v1/completions``)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt: expected a str, got {type(prompt).__name__}")
        return self._dispatch("text", prompt, max_tokens, temperature, top_p, stop, stream)

    def get_stats(self) -> dict:
        """calls, endpoint_calls (answered by the endpoint), failures (endpoint calls that
        failed after retries), fallbacks, retries (HTTP attempts beyond the first), tokens_in,
        tokens_out, latency_p50_s / latency_p95_s (whole calls, fallbacks included), last_error,
        and where the backend points."""
        s = self._stats.snapshot()
        s["retries"] = max(0, s.pop("http_requests") - s.pop("api_requests"))
        return s | {"preset": self.preset, "endpoint": self.base_url, "model": self.model,
                    "available": self.unavailable is None, "unavailable_reason": self.unavailable,
                    "fallback": self.fallback.name if self.fallback is not None else None}

    def ping(self, timeout: float = 2.0) -> dict:
        """Whether the endpoint answers ``GET /models`` now (see report.ping_endpoint)."""
        return report.ping_endpoint(self.base_url, self.api_key, timeout)

    def backend_status(self, ping: bool = True, timeout: float = 2.0) -> dict:
        row = {"name": self.preset, "kind": "chat", "endpoint": self.base_url, "configured_by": "ChatBackend",
               "answered": None, "detail": "not checked", "stats": self.get_stats()}
        if self.unavailable:
            row.update(answered=False, detail=self.unavailable)
        elif ping:
            row.update({k: v for k, v in self.ping(timeout).items() if k != "status"})
        return row

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ---- internals ------------------------------------------------------------------------
    def _openai(self):
        if self._client is None:
            import openai
            hook = lambda request: self._stats.count("http_requests")
            self._client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "no-key",
                                         timeout=self.timeout, max_retries=self.max_retries,
                                         http_client=openai.DefaultHttpxClient(event_hooks={"request": [hook]}))
        return self._client

    def _model_name(self) -> str:
        if self.model is None:   # e.g. "local": the server says which model it has
            self._stats.count("api_requests")
            self.model = self._openai().models.list().data[0].id
        return self.model

    def _create(self, kind: str, payload, max_tokens: int, temperature: float, top_p: float, stop, stream: bool):
        client = self._openai()
        args = {"model": self._model_name(), "max_tokens": max_tokens, "temperature": temperature,
                "top_p": top_p, "stop": stop, "stream": stream}
        if stream:
            args["stream_options"] = {"include_usage": True}
        self._stats.count("api_requests")
        if kind == "chat":
            return client.chat.completions.create(messages=payload, **args)
        return client.completions.create(prompt=payload, **args)

    @staticmethod
    def _endpoint_errors() -> tuple[type[BaseException], ...]:
        import httpx
        import openai
        return (openai.APIError, httpx.HTTPError)

    def _dispatch(self, kind, payload, max_tokens, temperature, top_p, stop, stream):
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens: expected an int >= 1, got {max_tokens!r}")
        if stream:
            return self._stream(kind, payload, max_tokens, temperature, top_p, stop)
        t0 = time.perf_counter()
        self._stats.count("calls")
        try:
            reason = self.unavailable
            if reason is None:
                try:
                    resp = self._create(kind, payload, max_tokens, temperature, top_p, stop, False)
                    self._stats.count("endpoint_calls")
                    if resp.usage is not None:
                        self._stats.count("tokens_in", resp.usage.prompt_tokens)
                        self._stats.count("tokens_out", resp.usage.completion_tokens)
                    self.last_source = "endpoint"
                    choice = resp.choices[0]
                    return (choice.message.content if kind == "chat" else choice.text) or ""
                except self._endpoint_errors() as exc:
                    reason = self._failed(exc)
            return self._fallback_text(kind, payload, "", max_tokens, temperature, top_p, stop, reason, None)
        finally:
            self._stats.observe(time.perf_counter() - t0)

    def _stream(self, kind, payload, max_tokens, temperature, top_p, stop) -> Iterator[str]:
        t0 = time.perf_counter()
        self._stats.count("calls")
        received: list[str] = []
        try:
            reason = self.unavailable
            if reason is None:
                try:
                    stream = self._create(kind, payload, max_tokens, temperature, top_p, stop, True)
                    try:
                        for chunk in stream:
                            if chunk.usage is not None:
                                self._stats.count("tokens_in", chunk.usage.prompt_tokens)
                                self._stats.count("tokens_out", chunk.usage.completion_tokens)
                            if chunk.choices:
                                c = chunk.choices[0]
                                piece = c.delta.content if kind == "chat" else c.text
                                if piece:
                                    received.append(piece)
                                    yield piece
                    finally:
                        stream.close()   # also when the caller stops reading early
                    self._stats.count("endpoint_calls")
                    self.last_source = "endpoint"
                    return
                except self._endpoint_errors() as exc:
                    reason = self._failed(exc)
            pieces: queue.Queue = queue.Queue()
            worker = threading.Thread(target=lambda: pieces.put(("end", self._safe_fallback(
                kind, payload, "".join(received), max_tokens, temperature, top_p, stop, reason, pieces.put))),
                daemon=True)
            worker.start()
            while True:
                item = pieces.get()
                if isinstance(item, str):
                    yield item
                    continue
                _, err = item
                if err is not None:
                    raise err
                return
        finally:
            self._stats.observe(time.perf_counter() - t0)

    def _safe_fallback(self, *args) -> BaseException | None:
        try:
            self._fallback_text(*args)
            return None
        except BaseException as exc:  # handed to the consuming thread, which raises it
            return exc

    def _failed(self, exc: BaseException) -> str:
        self._stats.count("failures")
        self._stats.error(exc)
        reason = f"{self.preset} endpoint {self.base_url} failed: {type(exc).__name__}: {exc}"
        log.warning("%s", reason)
        return reason

    def _fallback_text(self, kind, payload, received: str, max_tokens, temperature, top_p, stop, reason,
                       on_text) -> str:
        """Run the call (or the rest of a broken stream after ``received``) on the fallback."""
        if self.fallback is None:
            raise CloudBackendError(f"{reason}; and no fallback model is set (ChatBackend(fallback=...))")
        self._stats.count("fallbacks")
        self.last_source = "fallback"
        fb = self.fallback
        prompt = fb.chat_prompt(payload) if kind == "chat" else payload
        left = max_tokens - (len(fb.encode(prompt + received)) - len(fb.encode(prompt))) if received else max_tokens
        n = min(left, fb.max_seq_len - len(fb.encode(prompt + received)))
        if n < 1:
            return ""
        comp = fb.complete(prompt + received, n, temperature, top_p, stop, on_text)
        self._stats.count("tokens_in", comp.prompt_tokens)
        self._stats.count("tokens_out", comp.completion_tokens)
        return comp.text
