"""apt_ext.train.inductor_compat: the mix-order read cap, backported where torch lacks it.

The local torch has the native setting, so these tests reproduce torch 2.11's behaviour by
setting it to 0 (no cap) and install the backport's check by hand: an APT layer with left-spin
then gets an 18-load mix-order kernel without the check (torch 2.11 on the GPU made the same) and
none above 10 loads with it. Inductor generates the CUDA kernels on a fake sm_90 device
(tools/inductor_cuda_kernels.py); mix-order's small-workload limits are lifted (non-strict mode)
so that a small layer shows the fusion."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from apt_ext.train import inductor_compat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


def _mix_order_loads() -> list[int]:
    """tl.load counts of the mix-order reduction kernels of one APT layer's training step
    (d 64, 128 tokens, left-spin in its compiled form)."""
    import inductor_cuda_kernels as ick

    torch.manual_seed(0)
    model, inputs = ick.apt_model("decomposed", False, layers=1, d_model=64, heads=2, seq_len=128, batch=2)
    kernels = ick.cuda_kernels(ick.partitioned_graphs(model, inputs))
    return sorted(n for src in kernels.values() if "MixOrderReductionGrid" in src
                  for n in [ick.kernel_loads(src)] if n is not None)


@pytest.fixture
def uncapped():
    """torch 2.11's inductor: mix-order reductions without a read cap, small workloads too
    (inductor's own config.patch: pytest's monkeypatch.setattr deletes a config entry on undo)."""
    from torch._inductor import config

    with config.patch({"triton.mix_order_reduction_max_reads": 0, "triton.mix_order_reduction_non_strict_mode": True}):
        yield


def test_the_check_stops_the_over_fused_kernel(uncapped, monkeypatch):
    from torch._inductor.scheduler import FusedMixOrderReductions

    before = _mix_order_loads()
    assert before and max(before) > inductor_compat.MAX_READS  # the over-fusion the backport prevents
    monkeypatch.setattr(FusedMixOrderReductions, "can_fuse_with",
                        inductor_compat._capped(FusedMixOrderReductions.can_fuse_with, inductor_compat.MAX_READS))
    after = _mix_order_loads()
    assert after and max(after) <= inductor_compat.MAX_READS  # the layer norms' mix-order kernels stay


def test_cap_mix_order_reads_installs_once_where_the_setting_is_missing(monkeypatch):
    from torch._inductor import config
    from torch._inductor.scheduler import FusedMixOrderReductions

    assert inductor_compat.cap_mix_order_reads() == "native"  # this torch has the setting
    original = FusedMixOrderReductions.can_fuse_with
    monkeypatch.setattr(FusedMixOrderReductions, "can_fuse_with", original)  # undone after the test
    monkeypatch.delattr(config.triton, "mix_order_reduction_max_reads")
    assert inductor_compat.cap_mix_order_reads(12) == "patched"
    assert FusedMixOrderReductions.can_fuse_with.apt_max_reads == 12
    assert inductor_compat.cap_mix_order_reads() == "patched"  # replaced, not stacked
    patched = FusedMixOrderReductions.can_fuse_with
    assert patched.apt_max_reads == inductor_compat.MAX_READS and patched.__wrapped__ is original


def test_bad_max_reads():
    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(ValueError, match="max_reads"):
            inductor_compat.cap_mix_order_reads(bad)
