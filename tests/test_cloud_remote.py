"""RemoteModule / CloudNPULinear on a local Ray instance (docs/cloud.md): outputs equal the
local module's, weights travel once, failures and timeouts fall back and are counted, and a
model with a remote layer trains."""
from __future__ import annotations

import copy
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("ray")

from apt_ext.cloud import CloudNPULinear, RemoteModule, RemoteModuleError, backends_report  # noqa: E402


def nbytes(*ts: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def test_outputs_equal_local_weights_go_once_and_timeout_falls_back(ray_local, rng):
    lin = nn.Linear(64, 48)
    remote = RemoteModule(copy.deepcopy(lin), resources={"CPU": 1})
    xs = [torch.randn(5, 64, generator=rng) for _ in range(3)]
    with torch.no_grad():
        for x in xs:
            torch.testing.assert_close(remote(x), lin(x), rtol=1e-6, atol=1e-6)
    s = remote.get_stats()
    assert s["calls"] == 3 and s["remote_calls"] == 3 and s["fallbacks"] == 0 and s["failures"] == 0
    assert s["weight_syncs"] == 1 and s["bytes_weights"] == nbytes(lin.weight, lin.bias)
    assert s["bytes_sent"] == nbytes(*xs) and s["bytes_received"] == 3 * 5 * 48 * 4
    assert s["remote_device"] == "cpu" and s["actor_alive"] and s["cloud_ratio"] == 1.0
    assert 0 < s["latency_p50_s"] <= s["latency_p95_s"]
    rows = [r for r in backends_report(ping=True) if r["endpoint"] == f"ray:{id(remote):x}"]
    assert rows and rows[0]["answered"] is True and rows[0]["kind"] == "ray"
    remote.shutdown()


def test_a_call_past_its_timeout_falls_back(ray_local, rng):
    import os
    import time

    class SlowOnActor(nn.Module):  # defined here so that Ray pickles it by value
        """A Linear that sleeps 5 s per call in any process but the test's: the remote call
        times out whatever the machine's load, the local fallback answers at once."""

        def __init__(self, lin: nn.Linear) -> None:
            super().__init__()
            self.lin, self.home = lin, os.getpid()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if os.getpid() != self.home:
                time.sleep(5.0)
            return self.lin(x)

    lin = nn.Linear(16, 8)
    remote = RemoteModule(SlowOnActor(copy.deepcopy(lin)), resources={"CPU": 1}, timeout=0.5)
    x = torch.randn(3, 16, generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(remote(x), lin(x))
    s = remote.get_stats()
    assert s["timeouts"] == 1 and s["fallbacks"] == 1 and s["remote_calls"] == 0 and s["actor_alive"], s
    remote.shutdown()


def test_cloud_npu_linear_without_npu_falls_back(ray_local, rng):
    layer = CloudNPULinear(16, 8)                      # default resources: {"NPU": 1}
    x = torch.randn(4, 16, generator=rng)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    s = layer.get_stats()
    assert s["fallbacks"] == 1 and s["local_calls"] == 1 and s["cloud_calls"] == 0 and s["cloud_ratio"] == 0.0
    assert "NPU" in s["unavailable_reason"] and s["remote_calls"] == 0
    strict = CloudNPULinear(16, 8, fallback="error")
    with pytest.raises(RemoteModuleError, match="NPU"):
        strict(x)


def _wait_until_dead(actor, timeout_s: float = 60.0) -> None:
    """Block until calls to ``actor`` fail (after ``ray.kill``)."""
    import ray
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=10)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return
        time.sleep(0.05)
    raise AssertionError(f"the actor still answers {timeout_s} s after ray.kill")


def test_killed_actor_falls_back_and_is_replaced(ray_local, rng):
    import ray
    lin = nn.Linear(32, 32)
    remote = RemoteModule(copy.deepcopy(lin), resources={"CPU": 1}, retry_after_s=0)
    x = torch.randn(3, 32, generator=rng)
    with torch.no_grad():
        remote(x)
        ray.kill(remote._actor)
        _wait_until_dead(remote._actor)  # ray.kill is asynchronous: a call right after it may still land
        torch.testing.assert_close(remote(x), lin(x))     # the dead actor: answered locally
        s = remote.get_stats()
        assert s["failures"] == 1 and s["fallbacks"] == 1 and "Actor" in s["last_error"]
        torch.testing.assert_close(remote(x), lin(x), rtol=1e-6, atol=1e-6)   # a new actor
    s = remote.get_stats()
    assert s["actor_starts"] == 2 and s["weight_syncs"] == 2 and s["remote_calls"] == 2
    assert s["bytes_weights"] == 2 * nbytes(lin.weight, lin.bias)
    twin = copy.deepcopy(remote)          # a copy starts its own actor when first called
    assert remote.get_stats()["actor_alive"] and not twin.get_stats()["actor_alive"]
    assert twin.get_stats()["remote_calls"] == 2 and torch.equal(twin.module.weight, remote.module.weight)
    remote.shutdown()


def test_model_with_remote_layer_trains_one_step(ray_local, rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    ref = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
    model = copy.deepcopy(ref)
    model[2] = CloudNPULinear(32, 32, resources={"CPU": 1})   # the original design's layer, here on a CPU actor
    model[2].module.load_state_dict(ref[2].state_dict())
    x, y = torch.randn(8, 16, generator=rng), torch.randn(8, 4, generator=rng)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (ref, model)]
    for m, opt in zip((ref, model), opts):
        F.mse_loss(m(x), y).backward()
        opt.step()
    for (name, p), q in zip(ref.named_parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)   # gradients flowed back
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-6)   # the actor got the new weights
    s = model[2].get_stats()
    assert s["remote_calls"] == 2 and s["fallbacks"] == 0 and s["weight_syncs"] == 2
    model[2].shutdown()


def test_apt_decoder_ffn_runs_remotely(ray_local):
    from apt_ext.model import APTModel, APTModelConfiguration
    cfg = APTModelConfiguration(vocab_size=64, d_model=32, num_heads=2, d_ff=64, num_decoder_layers=2,
                                decoder_only=True, dropout=0.0, max_seq_len=32)
    model = APTModel(cfg).eval()
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        ref = model(ids)
        model.decoder[1].ffn = RemoteModule(model.decoder[1].ffn, resources={"CPU": 1})
        torch.testing.assert_close(model(ids), ref, rtol=1e-5, atol=1e-5)
        assert model.generate(ids[:, :4], 6).shape == (2, 10)
    assert model.decoder[1].ffn.get_stats()["remote_calls"] == 1 + 6
    model.decoder[1].ffn.shutdown()


JOIN = """
import torch
from torch import nn
from apt_ext.cloud import RemoteModule, connect
print("cluster CPUs", connect()["CPU"])          # RAY_ADDRESS: join, do not start
m = RemoteModule(nn.Linear(8, 4), resources={"CPU": 1})
x = torch.randn(2, 8)
with torch.no_grad():
    torch.testing.assert_close(m(x), m.module(x))
s = m.get_stats()
print("remote_calls", s["remote_calls"], "fallbacks", s["fallbacks"])
"""


def test_another_process_joins_the_running_cluster_by_address(ray_local):
    import os
    import subprocess
    import sys

    import ray
    address = ray.get_runtime_context().gcs_address
    env = dict(os.environ, RAY_ADDRESS=address, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", JOIN], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "cluster CPUs 2.0" in out.stdout and "remote_calls 1 fallbacks 0" in out.stdout


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="module"):
        RemoteModule("linear")
    with pytest.raises(ValueError, match="resources"):
        RemoteModule(nn.Linear(2, 2), resources={"GPU": -1})
    with pytest.raises(ValueError, match="fallback"):
        RemoteModule(nn.Linear(2, 2), fallback="maybe")
    with pytest.raises(ValueError, match="in_features"):
        CloudNPULinear(0, 4)
    with pytest.raises(TypeError, match="tensors"):
        RemoteModule(nn.Linear(2, 2))([1.0, 2.0])
