"""A RemoteModule placed on the GPU resource of a local Ray instance, driven from CPU tensors
(docs/cloud.md): the actor runs on cuda, outputs and gradients match the local CPU layer."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("ray")

from apt_ext.cloud import RemoteModule  # noqa: E402


def test_remote_module_on_gpu_from_cpu_driver(ray_local):
    if ray_local.get("GPU", 0) < 1:
        pytest.skip(f"the local Ray instance sees no GPU: {ray_local}")
    torch.manual_seed(0)
    lin = nn.Linear(1024, 512)
    remote = RemoteModule(copy.deepcopy(lin), resources={"GPU": 1}, timeout=120)
    x = torch.randn(64, 1024)
    with torch.no_grad():
        y = remote(x)
    assert y.device.type == "cpu"
    # TF32 may be on for cuda matmuls: compare at its precision
    torch.testing.assert_close(y, lin(x), rtol=2e-3, atol=2e-3)
    s = remote.get_stats()
    assert s["remote_device"].startswith("cuda") and s["remote_calls"] == 1 and s["fallbacks"] == 0
    assert s["weight_syncs"] == 1 and s["bytes_weights"] == (1024 * 512 + 512) * 4
    xg = x.clone().requires_grad_()
    F.mse_loss(remote(xg), torch.zeros(64, 512)).backward()
    xr = x.clone().requires_grad_()
    F.mse_loss(lin(xr), torch.zeros(64, 512)).backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=2e-3, atol=2e-5)
    torch.testing.assert_close(remote.module.weight.grad, lin.weight.grad, rtol=2e-3, atol=2e-5)
    remote.shutdown()
