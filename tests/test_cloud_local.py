"""The serving pieces in process (docs/cloud.md): checkpoint loading (plain, FP4, VGPU), text
decoding with stop strings, the batching engine, argument checks. No server, no network."""
from __future__ import annotations

import threading

import pytest
import torch

from apt_ext import _native
from apt_ext.cloud.engine import BatchEngine, EngineFull
from apt_ext.cloud.local_model import GenerationRequest, LocalModel, resolve_model_dir
from cloud_helpers import write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=1)


@pytest.fixture(scope="module")
def local(checkpoint):
    return LocalModel.from_checkpoint(checkpoint, device="cpu")


def reference(model, prompt: str, n: int) -> str:
    ids = list(prompt.encode())
    return bytes(model.generate(torch.tensor([ids]), n)[0, len(ids):].tolist()).decode()


def test_checkpoint_layouts_and_errors(checkpoint, tmp_path):
    assert resolve_model_dir(checkpoint) == checkpoint / "model"
    assert resolve_model_dir(checkpoint / "model") == checkpoint / "model"
    assert LocalModel.from_checkpoint(checkpoint / "model", device="cpu").name == checkpoint.name
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model_dir(tmp_path)


def test_batch_rows_equal_single_generate(local):
    prompts = ["a", "The longer prompt here", "mid size"]
    reqs = [local.request(p, max_tokens=5 + i) for i, p in enumerate(prompts)]   # left padding, own lengths
    local.run_batch(reqs)
    for i, (p, r) in enumerate(zip(prompts, reqs)):
        assert r.text == reference(local.model, p, 5 + i) and r.completion_tokens == 5 + i
        assert r.finish_reason == "length"


def test_stop_strings_and_streamed_text(local):
    full = reference(local.model, "xyz", 40)
    stop = full[10:13]
    cut = full.find(stop)
    pieces: list[str] = []
    c = local.complete("xyz", 40, stop=[stop, "\x00never"], on_text=pieces.append)
    assert c.text == full[:cut] and c.finish_reason == "stop"
    assert "".join(pieces) == c.text and len(pieces) > 1      # streamed, the stop string never sent


def test_utf8_held_back_until_complete():
    from apt_ext.cloud.local_model import _Row
    pieces: list[str] = []
    req = GenerationRequest([1], max_tokens=10, on_text=pieces.append)
    row = _Row(req, lambda ids: bytes(ids).decode("utf-8", errors="replace"), eos=None)
    for b in "é!".encode():                 # é is two bytes: nothing is sent after the first
        row.push(b)
        if b == 0xC3:
            assert pieces == []
    row.close()
    assert "".join(pieces) == "é!" and req.text == "é!"


def test_request_validation(local):
    with pytest.raises(ValueError, match="max_tokens"):
        local.request("x", 0)
    with pytest.raises(ValueError, match="temperature"):
        local.request("x", 2, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        local.request("x", 2, top_p=0)
    with pytest.raises(ValueError, match="stop"):
        local.request("x", 2, stop=["", "a"])
    with pytest.raises(ValueError, match="context"):
        local.request("x" * 2040, 10)
    with pytest.raises(ValueError, match="messages"):
        LocalModel.chat_prompt([{"role": "user"}])
    with pytest.raises(TypeError, match="model"):
        LocalModel("not a model", None)


def test_engine_batches_by_decoding_rule_and_refuses_past_queue(local):
    engine = BatchEngine(local, max_batch=4, max_queue=4, batch_wait_s=0.2)
    done = threading.Semaphore(0)
    errors: list = []

    def finished(err):
        errors.append(err)
        done.release()
    greedy = [local.request(f"g{i}", 4) for i in range(3)]
    sampled = [local.request(f"s{i}", 4, temperature=0.8, top_p=0.9) for i in range(2)]
    for r in greedy + sampled:
        engine.submit(r, finished)
    for _ in range(5):
        assert done.acquire(timeout=120)
    st = engine.stats()
    assert errors == [None] * 5 and st["requests"] == 5 and st["batches"] == 2 and st["max_batch_seen"] == 3
    assert all(r.completion_tokens == 4 for r in greedy + sampled)
    for r, i in zip(greedy, range(3)):
        assert r.text == reference(local.model, f"g{i}", 4)
    slow = [local.request("q", 1500) for _ in range(8)]
    for r in slow:
        engine.submit(r, lambda err: None)
    with pytest.raises(EngineFull):
        engine.submit(local.request("one too many", 2), lambda err: None)
    assert engine.stats()["rejected"] == 1
    for r in slow:
        r.cancelled = True
    engine.close()


@pytest.mark.skipif(not _native.has_kernel("fp4_linear", "CPU"), reason="no CPU fp4_linear kernel in this build")
def test_fp4_and_vgpu_options(checkpoint, local):
    from apt_ext.nn import FP4Linear
    fp4 = LocalModel.from_checkpoint(checkpoint, device="cpu", fp4="nvfp4")
    assert any(isinstance(m, FP4Linear) for m in fp4.model.modules())
    assert fp4.complete("hello", 6).completion_tokens == 6
    vgpu = LocalModel.from_checkpoint(checkpoint, device="cpu",
                                      vgpu_config='{"levels": [{"capacity_mb": 64, "device": "cpu"}]}')
    assert vgpu.complete("hello", 6).text == local.complete("hello", 6).text   # same weights, paged
    with pytest.raises(ValueError, match="vgpu_config"):
        LocalModel.from_checkpoint(checkpoint, device="cpu", vgpu_config="{not json")


def test_server_arguments_are_checked(local, tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    from apt_ext.cloud.server import ServerLimits, create_app, load_api_keys
    with pytest.raises(ValueError, match="api_keys"):
        create_app(local, [])
    with pytest.raises(ValueError, match="max_batch"):
        ServerLimits(max_batch=0)
    with pytest.raises(ValueError, match="request_timeout_s"):
        ServerLimits(request_timeout_s=0)
    monkeypatch.delenv("APT_API_KEYS", raising=False)
    with pytest.raises(ValueError, match="APT_API_KEYS"):
        load_api_keys()
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nalpha\n\n beta \n")
    assert load_api_keys(str(keys)) == ["alpha", "beta"]
    monkeypatch.setenv("APT_API_KEYS", "k1, k2")
    assert load_api_keys() == ["k1", "k2"]
