"""`apt-ext serve` and ChatBackend against each other on loopback (docs/cloud.md): real
servers in subprocesses, the real `openai` client, nothing mocked."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from apt_ext.cloud import ChatBackend, CloudBackendError, LocalModel  # noqa: E402
from apt_ext.model import APTModel  # noqa: E402
from cloud_helpers import API_KEY, Server, write_checkpoint  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def server(checkpoint):
    s = Server(checkpoint, "--max-tokens", "64", "--max-prompt-tokens", "200", "--max-body-bytes", "4096",
               "--max-batch", "16", "--batch-wait-ms", "50")
    yield s
    s.kill()


@pytest.fixture(scope="module")
def local(checkpoint):
    return LocalModel.from_checkpoint(checkpoint, device="cpu")


def greedy(model: APTModel, prompt: str, n: int) -> str:
    """The reference: plain `generate` (greedy, KV cache) on one prompt, decoded."""
    ids = list(prompt.encode("utf-8"))
    out = model.generate(torch.tensor([ids]), n)
    return bytes(out[0, len(ids):].tolist()).decode("utf-8", errors="replace")


def backend(server, **kw) -> ChatBackend:
    return ChatBackend("local", base_url=server.url, api_key=API_KEY, **kw)


def test_models_health_and_stats(server):
    r = httpx.get(server.url + "/models", headers=AUTH)
    assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == ["tiny"]
    assert httpx.get(server.url[:-3] + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url[:-3] + "/stats", headers=AUTH).json()["max_batch"] == 16


def test_chat_and_completion_equal_local_greedy(server, local):
    llm = backend(server)
    text = llm.complete("The cat sat on", max_tokens=12)
    assert text == greedy(local.model, "The cat sat on", 12)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    reply = llm.chat(msgs, max_tokens=10)
    assert reply == greedy(local.model, "system: Be brief.\nuser: Hello there\nassistant:", 10)
    s = llm.get_stats()
    assert s["calls"] == 2 and s["endpoint_calls"] == 2 and s["fallbacks"] == 0 and s["failures"] == 0
    assert s["tokens_out"] == 22 and s["tokens_in"] == len("The cat sat on") + len(LocalModel.chat_prompt(msgs))
    assert 0 < s["latency_p50_s"] <= s["latency_p95_s"]
    assert llm.model == "tiny" and llm.last_source == "endpoint"


def test_streaming_equals_non_streaming(server, local):
    llm = backend(server)
    pieces = list(llm.complete("Gradient descent", max_tokens=20, stream=True))
    assert len(pieces) > 1 and "".join(pieces) == greedy(local.model, "Gradient descent", 20)
    chat = list(llm.chat([{"role": "user", "content": "hi"}], max_tokens=8, stream=True))
    assert "".join(chat) == llm.chat([{"role": "user", "content": "hi"}], max_tokens=8)
    assert llm.get_stats()["tokens_out"] == 20 + 8 + 8   # usage arrives in the stream's last chunk


def test_stop_string_ends_the_completion(server, local):
    full = greedy(local.model, "abc", 30)
    stop = full[5:8]
    assert stop and full.find(stop) >= 0
    r = httpx.post(server.url + "/completions", headers=AUTH,
                   json={"model": "tiny", "prompt": "abc", "max_tokens": 30, "temperature": 0, "stop": stop})
    choice = r.json()["choices"][0]
    assert choice["text"] == full[:full.find(stop)] and choice["finish_reason"] == "stop"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": API_KEY}])
def test_auth_refused(server, headers):
    for method, url, body in (("GET", server.url + "/models", None), ("GET", server.url[:-3] + "/stats", None),
                              ("POST", server.url + "/chat/completions", {"model": "tiny"})):
        r = httpx.request(method, url, headers=headers, json=body)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key"


def test_client_with_wrong_key_falls_back_or_raises(server, local):
    with pytest.raises(CloudBackendError, match="401"):
        ChatBackend("local", base_url=server.url, api_key="nope", model="tiny").complete("x", max_tokens=2)
    llm = ChatBackend("local", base_url=server.url, api_key="nope", model="tiny", fallback=local)
    assert llm.complete("The cat", max_tokens=5) == greedy(local.model, "The cat", 5)
    s = llm.get_stats()
    assert s["failures"] == 1 and s["fallbacks"] == 1 and "401" in s["last_error"]


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
BAD = [
    ("malformed JSON", b'{"model": "tiny", "messages": [', 400, "invalid_json"),
    ("not an object", b"[1, 2]", 400, "invalid_json"),
    ("max_tokens as text", CHAT | {"max_tokens": "5"}, 400, "invalid_parameter"),
    ("max_tokens a bool", CHAT | {"max_tokens": True}, 400, "invalid_parameter"),
    ("temperature as text", CHAT | {"temperature": "hot"}, 400, "invalid_parameter"),
    ("messages not a list", CHAT | {"messages": "hi"}, 400, "invalid_parameter"),
    ("message without role", CHAT | {"messages": [{"content": "hi"}]}, 400, "invalid_parameter"),
    ("unknown role", CHAT | {"messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_parameter"),
    ("stream as text", CHAT | {"stream": "yes"}, 400, "invalid_parameter"),
    ("no messages", CHAT | {"messages": []}, 400, None),
    ("negative max_tokens", CHAT | {"max_tokens": -3}, 400, None),
    ("zero max_tokens", CHAT | {"max_tokens": 0}, 400, None),
    ("huge max_tokens", CHAT | {"max_tokens": 10**12}, 400, None),
    ("max_tokens over the server limit", CHAT | {"max_tokens": 65}, 400, None),
    ("temperature out of range", CHAT | {"temperature": 7.5}, 400, None),
    ("n > 1", CHAT | {"n": 3}, 400, "unsupported_parameter"),
    ("unknown model", CHAT | {"model": "gpt-9"}, 404, "model_not_found"),
    ("missing model", {"messages": CHAT["messages"]}, 400, "invalid_parameter"),
    ("prompt over the token limit", {"model": "tiny", "prompt": "y" * 201}, 400, "context_length_exceeded"),
    ("two prompts", {"model": "tiny", "prompt": ["a", "b"]}, 400, None),
    ("body over the size limit", {"model": "tiny", "prompt": "z" * 5000}, 413, "request_too_large"),
]


@pytest.mark.parametrize("name,body,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_openai_error_and_server_keeps_serving(server, name, body, status, code):
    path = "/completions" if isinstance(body, dict) and "prompt" in body else "/chat/completions"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + path, headers=AUTH | {"Content-Type": "application/json"}, content=content)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code
    ok = httpx.post(server.url + "/chat/completions", headers=AUTH, json=CHAT | {"max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2


def test_chunked_body_over_the_limit_is_refused(server):
    chunks = (b"x" * 3000 for _ in range(2))     # no Content-Length: counted as it arrives
    r = httpx.post(server.url + "/completions", headers=AUTH, content=chunks)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    ok = httpx.post(server.url + "/completions", headers=AUTH,
                    content=(p for p in (b'{"model": "tiny", ', b'"prompt": "ab", "max_tokens": 2}')))
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2


def test_unknown_route_and_method_get_openai_errors(server):
    r = httpx.get(server.url + "/engines", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(server.url + "/chat/completions", headers=AUTH)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_16_concurrent_clients_each_get_local_greedy_result(server, local):
    prompts = [f"Request {i}: the value of {chr(65 + i)} is" for i in range(16)]
    results: dict[int, str] = {}
    clients = [backend(server, model="tiny") for _ in prompts]
    start = threading.Barrier(len(prompts))

    def ask(i: int) -> None:
        start.wait()
        results[i] = clients[i].complete(prompts[i], max_tokens=8 + i % 5)
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for i, p in enumerate(prompts):
        assert results[i] == greedy(local.model, p, 8 + i % 5), i
    assert all(c.get_stats()["fallbacks"] == 0 for c in clients)
    stats = httpx.get(server.url[:-3] + "/stats", headers=AUTH).json()
    assert stats["max_batch_seen"] > 1   # requests were really decoded together


def test_full_queue_gets_429_and_slow_request_times_out(checkpoint):
    s = Server(checkpoint, "--max-batch", "1", "--max-queue", "0", "--timeout", "1", "--max-tokens", "2000")
    try:
        body = {"model": "tiny", "prompt": "long", "max_tokens": 2000, "stream": True}
        with httpx.stream("POST", s.url + "/completions", headers=AUTH, json=body, timeout=60) as first:
            lines = first.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))   # it is running
            busy = httpx.post(s.url + "/completions", headers=AUTH, json={"model": "tiny", "prompt": "x"})
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["type"] == "rate_limit_error"
            events = [json.loads(line[5:]) for line in lines if line.startswith("data:") and "[DONE]" not in line]
        assert events[-1]["error"]["code"] == "timeout"   # 1 s was not enough for 2000 tokens
        # the client retries 429s with backoff until the slot frees
        llm = ChatBackend("local", base_url=s.url, api_key=API_KEY, model="tiny", max_retries=6)
        assert len(llm.complete("ok", max_tokens=3)) > 0
        r = httpx.post(s.url + "/completions", headers=AUTH, json={"model": "tiny", "prompt": "x", "max_tokens": 2000})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert httpx.get(s.url[:-3] + "/stats", headers=AUTH).json()["rejected"] >= 1
    finally:
        s.kill()


def test_server_killed_mid_request_client_falls_back(checkpoint, local):
    # a stream: the server dies after the first piece; the rest comes from the local model
    s = Server(checkpoint, "--max-tokens", "300")
    llm = ChatBackend("local", base_url=s.url, api_key=API_KEY, model="tiny", max_retries=1, timeout=10,
                      fallback=local)
    try:
        stream = llm.complete("Once upon a time", max_tokens=300, stream=True)
        pieces = [next(stream)]
        s.kill()
        pieces.extend(stream)
    finally:
        s.kill()
    assert "".join(pieces) == greedy(local.model, "Once upon a time", 300)
    st = llm.get_stats()
    assert st["calls"] == 1 and st["failures"] == 1 and st["fallbacks"] == 1 and st["endpoint_calls"] == 0
    assert llm.last_source == "fallback"
    # the next call finds nobody listening: retried, then answered locally
    assert llm.complete("Hello", max_tokens=6) == greedy(local.model, "Hello", 6)
    st = llm.get_stats()
    assert st["fallbacks"] == 2 and st["failures"] == 2 and st["retries"] >= 1
    assert "Connection" in st["last_error"]
    # a plain request: the server dies while it is generating the answer
    s = Server(checkpoint, "--max-tokens", "2000")
    llm = ChatBackend("local", base_url=s.url, api_key=API_KEY, model="tiny", max_retries=0, fallback=local)
    answer: list[str] = []
    try:
        t = threading.Thread(target=lambda: answer.append(llm.complete("Far away", max_tokens=600)))
        t.start()
        deadline = time.monotonic() + 120
        while httpx.get(s.url[:-3] + "/stats", headers=AUTH).json()["active"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        s.kill()
        t.join(timeout=300)
    finally:
        s.kill()
    assert answer == [greedy(local.model, "Far away", 600)]
    st = llm.get_stats()
    assert st["failures"] == 1 and st["fallbacks"] == 1 and st["endpoint_calls"] == 0


def test_modelarts_preset_url_key_and_fallback(monkeypatch, local):
    for var in ("MAAS_API_KEY", "HUAWEI_CLOUD_API_KEY", "MAAS_BASE_URL", "HUAWEI_CLOUD_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MAAS_API_KEY", "maas-secret")
    b = ChatBackend("modelarts")
    assert b.base_url == "https://api.modelarts-maas.com/v1" and b.api_key == "maas-secret"
    assert b.key_source == "MAAS_API_KEY" and b.unavailable is None
    monkeypatch.setenv("MAAS_BASE_URL", "https://infer.example.test/v1/")
    assert ChatBackend("modelarts").base_url == "https://infer.example.test/v1"
    monkeypatch.delenv("MAAS_API_KEY")
    monkeypatch.setenv("HUAWEI_CLOUD_API_KEY", "seed-name")   # the original design's variable
    assert ChatBackend("modelarts").api_key == "seed-name"
    monkeypatch.delenv("HUAWEI_CLOUD_API_KEY")
    no_key = ChatBackend("modelarts", fallback=local)
    assert "MAAS_API_KEY" in no_key.unavailable
    assert no_key.chat([{"role": "user", "content": "hi"}], max_tokens=4) == local.chat(
        [{"role": "user", "content": "hi"}], max_tokens=4).text
    st = no_key.get_stats()
    assert st["fallbacks"] == 1 and st["endpoint_calls"] == 0 and st["available"] is False
    with pytest.raises(CloudBackendError, match="MAAS_API_KEY"):
        ChatBackend("modelarts").complete("hi")
    with pytest.raises(ValueError, match="preset"):
        ChatBackend("azure")


def test_vb_report_and_info_list_backends(server, monkeypatch):
    import gc

    import apt_ext.vb as vb
    gc.collect()   # ChatBackends of earlier tests are gone
    monkeypatch.setenv("APT_SERVE_URL", server.url)
    monkeypatch.setenv("APT_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")   # nothing listens on port 9
    try:
        rows = {r["endpoint"]: r for r in vb.enable("speed", verbose=False)["cloud_backends"]}
    finally:
        vb.disable()
    assert rows[server.url]["answered"] is True and "tiny" in rows[server.url]["detail"]
    dead = rows["http://127.0.0.1:9/v1"]
    assert dead["name"] == "openai" and dead["answered"] is False and "no answer" in dead["detail"]
    out = subprocess.run([sys.executable, "-m", "apt_ext.cli.main", "info"], capture_output=True, text=True,
                         timeout=300).stdout
    assert "cloud backends:" in out and server.url in out and "answered" in out and "NO ANSWER" in out
