"""An OpenAI-compatible HTTP API over a :class:`LocalModel` (FastAPI): ``GET /v1/models``,
``POST /v1/chat/completions`` and ``POST /v1/completions`` (``"stream": true`` answers with
server-sent events), plus ``GET /health`` (no key) and ``GET /stats`` (engine counters).

Every ``/v1`` route and ``/stats`` needs ``Authorization: Bearer <key>`` with a key from
``api_keys`` (compared in constant time: SHA-256 digests through ``hmac.compare_digest``);
``api_keys=None`` turns authentication off. Limits (:class:`ServerLimits`): body size (413),
prompt tokens and prompt + ``max_tokens`` within the model's context (400), ``max_tokens``
(400), requests in flight (429 past ``max_batch + max_queue``), time per request (504; a stream
gets an error event). Errors have OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}``. Needs ``pip install 'apt_ext[cloud]'``.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException

from apt_ext.cloud.engine import BatchEngine, EngineFull
from apt_ext.cloud.local_model import GenerationRequest, LocalModel

# request fields of OpenAI's API this server does not implement, with the value that means "off"
UNSUPPORTED = {"n": 1, "logprobs": None, "top_logprobs": None, "tools": None, "tool_choice": None,
               "functions": None, "function_call": None, "response_format": None, "logit_bias": None,
               "seed": None, "presence_penalty": 0, "frequency_penalty": 0, "echo": False, "best_of": 1,
               "suffix": None}


@dataclass
class ServerLimits:
    """Limits of one server. ``max_prompt_tokens`` None: the model's context minus one."""
    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int | None = None
    max_tokens: int = 256
    max_batch: int = 8
    max_queue: int = 32
    request_timeout_s: float = 60.0
    batch_wait_s: float = 0.005

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_tokens", "max_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) or self.max_queue < 0:
            raise ValueError(f"max_queue: expected an int >= 0, got {self.max_queue!r}")
        if self.max_prompt_tokens is not None and (not isinstance(self.max_prompt_tokens, int) or self.max_prompt_tokens < 1):
            raise ValueError(f"max_prompt_tokens: expected None or an int >= 1, got {self.max_prompt_tokens!r}")
        if not self.request_timeout_s > 0:
            raise ValueError(f"request_timeout_s: expected > 0, got {self.request_timeout_s!r}")


class APIError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _schemas():
    """The request models (pydantic, strict types: "5" is not an int, 1 is not a bool)."""

    class StreamOptions(BaseModel):
        model_config = ConfigDict(strict=True, extra="ignore")
        include_usage: bool = False

    class Params(BaseModel):
        model_config = ConfigDict(strict=True, extra="allow")
        model: str
        max_tokens: int | None = None
        max_completion_tokens: int | None = None
        temperature: float = 1.0
        top_p: float = 1.0
        stream: bool = False
        stream_options: StreamOptions | None = None
        stop: str | list[str] | None = None
        user: str | None = None

    class TextPart(BaseModel):
        model_config = ConfigDict(strict=True, extra="ignore")
        type: Literal["text"]
        text: str

    class Message(BaseModel):
        model_config = ConfigDict(strict=True, extra="ignore")
        role: Literal["system", "developer", "user", "assistant"]
        content: str | list[TextPart]
        name: str | None = None

    class ChatParams(Params):
        messages: list[Message]

    class CompletionParams(Params):
        prompt: str | list[str]

    return ChatParams, CompletionParams


def _key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _authorized(header: str | None, digests: list[bytes]) -> bool:
    """Bearer token against every configured key in constant time (no early exit)."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    given = _key_digest(token.strip())
    ok = False
    for d in digests:
        ok |= hmac.compare_digest(given, d)
    return ok


class _Guard:
    """ASGI middleware in front of every route: the API key (401), then the body size (413),
    before anything reads the request."""

    PROTECTED = ("/v1", "/stats")

    def __init__(self, app, digests: list[bytes] | None, max_body: int) -> None:
        self.app, self.digests, self.max_body = app, digests, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.digests is not None and scope["path"].startswith(self.PROTECTED):
            if not _authorized(headers.get("authorization"), self.digests):
                return await _send_error(send, APIError(401, "missing or wrong API key: send "
                                                        "'Authorization: Bearer <key>'", code="invalid_api_key"))
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _send_error(send, _too_large(self.max_body))
        # read the body here (chunked uploads have no Content-Length), then hand it on
        chunks, seen, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            chunks.append(msg.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_body:
                return await _send_error(send, _too_large(self.max_body))
            more = msg.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()   # what follows the body: http.disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replay, send)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"request body larger than {limit} bytes", code="request_too_large")


async def _send_error(send, err: APIError) -> None:
    body = json.dumps(err.body()).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _check_unsupported(extra: dict) -> None:
    for name, off in UNSUPPORTED.items():
        if name in extra and extra[name] != off:
            raise APIError(400, f"{name}: not supported by this server (only {off!r})", param=name,
                           code="unsupported_parameter")


def _message_text(content) -> str:
    return content if isinstance(content, str) else "".join(p.text for p in content)


def create_app(model: LocalModel, api_keys: list[str] | None, limits: ServerLimits | None = None):
    """The FastAPI application serving ``model``. ``api_keys``: accepted bearer keys (at least
    one), or None for no authentication."""

    if not isinstance(model, LocalModel):
        raise TypeError(f"model: expected a LocalModel, got {type(model).__name__}")
    if api_keys is not None and (not api_keys or any(not isinstance(k, str) or not k.strip() for k in api_keys)):
        raise ValueError("api_keys: expected a non-empty list of non-empty strings (or None for no authentication)")
    limits = limits or ServerLimits()
    max_prompt = limits.max_prompt_tokens or model.max_seq_len - 1
    ChatParams, CompletionParams = _schemas()
    engine = BatchEngine(model, limits.max_batch, limits.max_queue, limits.batch_wait_s)
    created = int(time.time())
    counters = {"timeouts": 0, "client_errors": 0}

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(engine.close)

    app = FastAPI(title="apt-ext serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        if 400 <= exc.status < 500:
            counters["client_errors"] += 1
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(APIError(exc.status_code, str(exc.detail), code=code).body(), status_code=exc.status_code)

    async def parse(request: Request, schema):
        raw = await request.body()
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"body: malformed JSON ({exc})", code="invalid_json") from None
        if not isinstance(obj, dict):
            raise APIError(400, f"body: expected a JSON object, got {type(obj).__name__}", code="invalid_json")
        try:
            params = schema.model_validate(obj)
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = ".".join(str(p) for p in e["loc"])
            raise APIError(400, f"{loc}: {e['msg']}", param=loc, code="invalid_parameter") from None
        if params.model != model.name:
            raise APIError(404, f"model: {params.model!r} does not exist here; this server has {model.name!r}",
                           param="model", code="model_not_found")
        _check_unsupported(params.model_extra or {})
        return params

    def make_request(params, prompt: str) -> GenerationRequest:
        max_tokens = params.max_completion_tokens if params.max_completion_tokens is not None else params.max_tokens
        param = "max_completion_tokens" if params.max_completion_tokens is not None else "max_tokens"
        if max_tokens is None:
            max_tokens = min(limits.max_tokens, 16)
        if not 1 <= max_tokens <= limits.max_tokens:
            raise APIError(400, f"{param}: expected an int in [1, {limits.max_tokens}], got {max_tokens}", param=param)
        n_prompt = len(model.encode(prompt))
        if n_prompt > max_prompt:
            raise APIError(400, f"prompt: {n_prompt} tokens, more than this server's limit of {max_prompt}",
                           param="prompt", code="context_length_exceeded")
        try:
            return model.request(prompt, max_tokens, params.temperature, params.top_p, params.stop)
        except ValueError as exc:
            name = str(exc).split(":", 1)[0]
            code = "context_length_exceeded" if name == "prompt" else None
            raise APIError(400, str(exc), param=name, code=code) from None

    async def run(params, prompt: str, kind: str):
        req = make_request(params, prompt)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        if params.stream:
            req.on_text = lambda d: loop.call_soon_threadsafe(events.put_nowait, ("delta", d))
        try:
            engine.submit(req, lambda err: loop.call_soon_threadsafe(events.put_nowait, ("done", err)))
        except EngineFull as exc:
            raise APIError(429, f"server busy: {exc}; retry later", type_="rate_limit_error",
                           code="rate_limit_exceeded") from None
        deadline = loop.time() + limits.request_timeout_s
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        usage = lambda: {"prompt_tokens": len(req.prompt_ids), "completion_tokens": req.completion_tokens,
                         "total_tokens": len(req.prompt_ids) + req.completion_tokens}
        if not params.stream:
            try:
                while True:
                    what, err = await asyncio.wait_for(events.get(), max(deadline - loop.time(), 0))
                    if what == "done":
                        break
            except asyncio.TimeoutError:
                req.cancelled = True
                counters["timeouts"] += 1
                raise APIError(504, f"request took longer than {limits.request_timeout_s} s",
                               type_="timeout", code="timeout") from None
            if err is not None:
                raise APIError(500, f"generation failed: {type(err).__name__}: {err}", type_="server_error")
            choice = ({"index": 0, "message": {"role": "assistant", "content": req.text}} if kind == "chat"
                      else {"index": 0, "text": req.text, "logprobs": None})
            choice["finish_reason"] = req.finish_reason
            obj = "chat.completion" if kind == "chat" else "text_completion"
            return JSONResponse({"id": rid, "object": obj, "created": int(time.time()), "model": model.name,
                                 "choices": [choice], "usage": usage()})
        return StreamingResponse(stream(req, events, deadline, rid, kind, params, usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def stream(req, events, deadline, rid, kind, params, usage):
        loop = asyncio.get_running_loop()
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def chunk(delta: str | None, finish: str | None, role: bool = False) -> str:
            if kind == "chat":
                d = ({"role": "assistant", "content": ""} if role else {}) | ({"content": delta} if delta else {})
                choice = {"index": 0, "delta": d, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
            return _sse({"id": rid, "object": obj, "created": int(time.time()), "model": model.name,
                         "choices": [choice]})
        try:
            if kind == "chat":
                yield chunk(None, None, role=True)
            while True:
                try:
                    what, val = await asyncio.wait_for(events.get(), max(deadline - loop.time(), 0))
                except asyncio.TimeoutError:
                    counters["timeouts"] += 1
                    yield _sse(APIError(504, f"request took longer than {limits.request_timeout_s} s",
                                        type_="timeout", code="timeout").body())
                    return
                if what == "delta":
                    yield chunk(val, None)
                    continue
                if val is not None:
                    yield _sse(APIError(500, f"generation failed: {type(val).__name__}: {val}",
                                        type_="server_error").body())
                    return
                yield chunk(None, req.finish_reason)
                if params.stream_options is not None and params.stream_options.include_usage:
                    yield _sse({"id": rid, "object": obj, "created": int(time.time()), "model": model.name,
                                "choices": [], "usage": usage()})
                yield "data: [DONE]\n\n"
                return
        finally:
            req.cancelled = True   # client gone or finished: the engine drops the row

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/stats")
    async def stats():
        return engine.stats() | counters

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": model.name, "object": "model", "created": created,
                                            "owned_by": "apt_ext"}]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        if model_id != model.name:
            raise APIError(404, f"model: {model_id!r} does not exist here", param="model", code="model_not_found")
        return {"id": model.name, "object": "model", "created": created, "owned_by": "apt_ext"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        params = await parse(request, ChatParams)
        if not params.messages:
            raise APIError(400, "messages: expected at least one message", param="messages")
        msgs = [{"role": m.role, "content": _message_text(m.content)} for m in params.messages]
        return await run(params, model.chat_prompt(msgs), "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        params = await parse(request, CompletionParams)
        prompt = params.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise APIError(400, f"prompt: this server takes one prompt per request, got {len(prompt)}",
                               param="prompt")
            prompt = prompt[0]
        return await run(params, prompt, "text")

    digests = None if api_keys is None else [_key_digest(k.strip()) for k in api_keys]
    return _Guard(app, digests, limits.max_body_bytes)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def load_api_keys(path: str | None = None, env: str = "APT_API_KEYS") -> list[str]:
    """Keys from ``path`` (one per line, ``#`` comments) or else the comma-separated ``env``
    variable; ValueError when neither gives a key."""
    import os
    if path is not None:
        from pathlib import Path
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"--api-key-file: {path} is not a file")
        keys = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if not keys:
            raise ValueError(f"--api-key-file: {path} holds no key (one key per line)")
        return keys
    keys = [k.strip() for k in os.environ.get(env, "").split(",") if k.strip()]
    if not keys:
        raise ValueError(f"API keys are required: pass --api-key-file FILE or set {env}=key1,key2 "
                         "(or --no-auth for a server nobody else can reach)")
    return keys
