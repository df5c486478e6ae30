"""offload(model, stack): outputs equal the resident model's, on the CPU 'device' level."""
from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from apt_ext.nn.fp4_linear import FP4Linear
from apt_ext.vgpu import VGPUCapacityError, VGPUStack, offload
from vgpu_helpers import cpu_levels


def _mlp_stack(n_blocks: int = 6, d: int = 64, dtype: torch.dtype = torch.float32) -> nn.Module:
    blocks = [nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.LayerNorm(d)) for _ in range(n_blocks)]
    return nn.Sequential(*blocks).to(dtype).eval()


def _weight_bytes(model: nn.Module) -> int:
    return sum(t.nbytes for t in list(model.parameters()) + list(model.buffers()))


def _eight_blocks() -> tuple[nn.Module, torch.Tensor, torch.Tensor, float]:
    """An 8-block MLP stack, an input x [3, 64], its output and the weights' MiB."""
    torch.manual_seed(0)
    model = _mlp_stack(n_blocks=8)
    x = torch.randn(3, 64)
    with torch.no_grad():
        ref = model(x)
    return model, x, ref, _weight_bytes(model) / (1 << 20)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_offload_matches_resident(tmp_path, prefetch):
    torch.manual_seed(0)
    model = _mlp_stack()
    x = torch.randn(5, 64)
    with torch.no_grad():
        ref = model(x)
    wb = _weight_bytes(model) / (1 << 20)
    # device level: 25% of the weights; host: 40%; the rest spills to SSD files
    st = VGPUStack(cpu_levels(tmp_path, device_mb=0.25 * wb, host_mb=0.4 * wb))
    handle = offload(model, st, prefetch=prefetch)
    # weights now live in the stack: placeholders, but for the units kept on the device level,
    # which hold their (pinned) device tensors for good and get no hooks
    kept = set(handle.resident)
    for name, mod in model.named_modules():
        for p in mod.parameters(recurse=False):
            assert (p.numel() > 0) == (name in kept), name
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(model(x), ref)
    st.wait_prefetch()
    s = st.stats()
    assert s["prefetch_errors"] == 0 and s["levels"][2]["hits"] > 0
    assert (s["prefetched"] > 0) == (prefetch > 0)
    # recorded execution order of the units that move (registration order in this Sequential)
    assert handle.order == [n for n in handle._units if n not in kept]
    # post-hooks unpinned everything but the units kept resident for good
    assert st.stats()["levels"][0]["pinned_entries"] == len(handle.resident)
    handle.restore()
    assert len(st) == 0 and torch.equal(model(x), ref)
    st.close()


def test_offload_fp4_linear(tmp_path):
    """FP4Linear keeps packed/scales/tensor_scale as buffers: they move through the stack."""
    model = nn.Sequential(*[FP4Linear.from_linear(nn.Linear(64, 64)) for _ in range(6)]).eval()
    for m in model:  # paged layers use fp4_linear (no private copy): the reference must too, bit for bit
        m.cpu_tiled = False
    x = torch.randn(4, 64)
    with torch.no_grad():
        ref = model(x)
    wb = _weight_bytes(model) / (1 << 20)
    st = VGPUStack(cpu_levels(tmp_path, device_mb=0.3 * wb, host_mb=0.3 * wb))
    handle = offload(model, st, prefetch=2)
    assert all(m.packed.numel() == 0 for m in model)
    assert all(m._apt_paged for m in model)  # FP4Linear keeps no private (tiled) device copy
    with torch.no_grad():
        assert torch.equal(model(x), ref)
        assert torch.equal(model(x), ref)
    handle.restore()
    assert not any(m._apt_paged for m in model)
    st.close()


def test_offload_too_big_leaves_model_intact(tmp_path):
    model = _mlp_stack()
    x = torch.randn(2, 64)
    with torch.no_grad():
        ref = model(x)
    st = VGPUStack([{"device": "cpu", "kind": "device", "capacity_mb": 0.05}, {"device": "cpu", "capacity_mb": 0.05}])
    with pytest.raises(VGPUCapacityError):
        offload(model, st)
    assert len(st) == 0
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    st.close()


def test_offload_bad_args(tmp_path):
    st = VGPUStack(cpu_levels(tmp_path))
    with pytest.raises(TypeError, match="model"):
        offload("model", st)
    with pytest.raises(TypeError, match="stack"):
        offload(nn.Linear(2, 2), {"levels": []})
    with pytest.raises(ValueError, match="prefetch"):
        offload(nn.Linear(2, 2), st, prefetch=-1)
    st.close()
    with pytest.raises(ValueError, match="closed"):
        offload(nn.Linear(2, 2), st)


def test_offload_twice(tmp_path):
    """To the same stack: the same handle, nothing stored twice, outputs unchanged; to another
    stack, or a model whose submodule is offloaded on its own: ValueError until restore()."""
    model = _mlp_stack(n_blocks=2)
    x = torch.randn(3, 64)
    with torch.no_grad():
        ref = model(x)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    st, other = VGPUStack(cpu_levels(tmp_path / "a")), VGPUStack(cpu_levels(tmp_path / "b"))
    handle = offload(model, st, prefetch=2)
    keys = len(st)
    assert offload(model, st, prefetch=1) is handle and handle.prefetch == 1 and len(st) == keys
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    with pytest.raises(ValueError, match="already offloaded to another VGPUStack.*restore"):
        offload(model, other)
    with pytest.raises(ValueError, match="'0.0' is already offloaded"):
        offload(nn.Sequential(model[0]), other)
    handle.restore()
    assert len(st) == 0
    again = offload(model, other)          # after restore() it can go anywhere
    assert again is not handle
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    again.restore()
    st.close()
    other.close()


class _TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.mid, self.head = nn.Embedding(10, 8), nn.Linear(8, 8), nn.Linear(8, 10)
        self.head.weight = self.emb.weight  # tied: owned by two modules

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.mid(self.emb(ids))))


def test_offload_packs_each_units_own_tensors(tmp_path):
    """A unit's own tensors share one stack entry (mid: weight + bias), a tied weight keeps an
    entry of its own (used by emb and head), a unit with one own tensor stores it as it is (head's
    bias); outputs equal the resident model's; restore() gives every tensor its own storage."""
    torch.manual_seed(0)
    model = _TiedLM().eval()
    ids = torch.randint(0, 10, (3, 5))
    with torch.no_grad():
        ref = model(ids)
    st = VGPUStack(cpu_levels(tmp_path, device_mb=1.0, host_mb=1.0))
    handle = offload(model, st, prefetch=1)
    assert len(st) == 3 and sum(k.endswith(".__packed__") for k in st.keys()) == 1
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(model(ids), ref)
    handle.restore()
    assert len(st) == 0 and model.head.weight is model.emb.weight
    for t in (model.mid.weight, model.mid.bias, model.head.bias):
        assert t.untyped_storage().nbytes() == t.nbytes  # not a view into the packed bytes
    with torch.no_grad():
        assert torch.equal(model(ids), ref)
    st.close()


def test_offload_refuses_a_layer_that_released_its_canonical_weight(tmp_path):
    """FP4Linear.release_canonical() keeps the weight as a tiled copy on its device only: offload
    could not page it, so it says what to call first and pages nothing."""
    model = nn.Sequential(FP4Linear(64, 32), nn.ReLU(), FP4Linear(32, 8))
    model[2].release_canonical()
    st = VGPUStack(cpu_levels(tmp_path))
    try:
        with pytest.raises(ValueError, match=r"'2'.*restore_canonical"):
            offload(model, st)
        assert not any(getattr(m, "_apt_paged", False) for m in model.modules())
        model[2].restore_canonical()
        offload(model, st).restore()
    finally:
        st.close()


def test_offload_keeps_what_fits_resident(tmp_path):
    """A model larger than the device level: keep_resident pins the units that fit (with room for
    the units in flight) and moves fewer bytes per forward than LRU alone, which evicts every unit
    of a cyclic pass before its next use; outputs are the same."""
    model, x, ref, wb = _eight_blocks()
    moved = {}
    for keep in (False, True):
        m = _mlp_stack(n_blocks=8)
        m.load_state_dict(model.state_dict())
        (tmp_path / str(keep)).mkdir()
        st = VGPUStack(cpu_levels(tmp_path / str(keep), device_mb=0.5 * wb, host_mb=1.2 * wb))
        # prefetch=0: bytes moved are then deterministic (an asynchronous prefetch that falls
        # behind on a loaded CPU moves units twice); the prefetch targets are checked below
        handle = offload(m, st, prefetch=0, keep_resident=keep)
        with torch.no_grad():
            assert torch.equal(m(x), ref)  # records the order
            before = st.stats()["links"].get("host->device", {}).get("bytes", 0)
            assert torch.equal(m(x), ref)
        s = st.stats()
        moved[keep] = s["links"].get("host->device", {}).get("bytes", 0) - before
        lv0 = s["levels"][0]
        assert lv0["used_bytes"] <= lv0["capacity_bytes"]
        if keep:
            assert handle.resident and lv0["pinned_entries"] == len(handle.resident)
            assert all(st.level(k) == 0 for n in handle.resident for k in handle._units[n].keys)
            # equal-size units kept are spread over the model, not its first blocks
            blocks = sorted(int(n.split(".")[0]) for n in handle.resident)
            assert blocks[-1] >= 4, blocks
            # pre-hooks prefetch the next paged units, never a resident one
            handle.prefetch = 2
            paged = [n for n in handle.order if n not in handle.resident]
            for n in handle.order:
                targets = handle._prefetch_targets(n)
                assert len(targets) == min(2, len(paged)) and not set(targets) & set(handle.resident)
                i = handle.order.index(n)
                assert targets[0] == next(u for u in handle.order[i + 1:] + handle.order[:i] if u in paged)
        else:
            assert handle.resident == [] and lv0["pinned_entries"] == 0
        handle.restore()
        assert len(st) == 0 and torch.equal(m(x), ref)
        st.close()
    assert 0 < moved[True] < 0.75 * moved[False]


def test_offload_rejects_bad_keep_resident(tmp_path):
    st = VGPUStack(cpu_levels(tmp_path, device_mb=1, host_mb=1))
    with pytest.raises(TypeError, match="keep_resident"):
        offload(_mlp_stack(1), st, keep_resident="yes")
    assert len(st) == 0
    st.close()


@pytest.mark.parametrize("small_bytes", [-1, 2048])
def test_offload_keeps_small_units_first(tmp_path, monkeypatch, small_bytes):
    """Units up to SMALL_UNIT_BYTES (here 2 KiB: the LayerNorms, 512 bytes each) are kept before
    any larger one, so their hooks never run; without them (-1) the largest units go first and
    the LayerNorms, last in that order, are paged. Outputs are the same either way."""
    offload_module = importlib.import_module("apt_ext.vgpu.offload")  # the package exports the function
    monkeypatch.setattr(offload_module, "SMALL_UNIT_BYTES", small_bytes)
    model, x, ref, wb = _eight_blocks()
    with VGPUStack(cpu_levels(tmp_path, device_mb=0.5 * wb, host_mb=1.2 * wb)) as st:
        handle = offload(model, st, prefetch=2)
        norms = {f"{b}.3" for b in range(8)}
        kept = set(handle.resident)
        if small_bytes > 0:
            assert norms <= kept and kept - norms
        else:
            assert kept and not norms & kept
        with torch.no_grad():
            assert torch.equal(model(x), ref) and torch.equal(model(x), ref)
        handle.restore()
