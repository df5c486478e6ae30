"""``apt_model``: the design document's module paths over apt_ext (re-exports and adapters only)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_says_once_on_stderr_that_apt_ext_is_maintained():
    code = ("import apt_model, apt_model.optimization, apt_model.modeling.apt_model, "
            "apt_model.memory.aim_memory, apt_model.core.system\n"
            "import apt_model.optimization.vb_global as vb\n"
            "import importlib; importlib.reload(apt_model.optimization)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert r.stderr.count("apt_model is the original design's name") == 1
    assert "the maintained package is apt_ext" in r.stderr


def test_seed_paths_are_the_apt_ext_objects():
    import apt_ext.vb
    import apt_model.optimization as opt
    import apt_model.optimization.vb_global as vb
    from apt_ext import devices, memory, model, nn, vgpu
    from apt_model.core.system import get_device
    from apt_model.memory.aim_memory import AIMConfig, create_aim_memory
    from apt_model.modeling.apt_model import APTModel, APTModelConfiguration
    from apt_model.modeling.apt_transformer import APTTransformer
    assert vb is apt_ext.vb and opt.vb is apt_ext.vb and opt.vb_global is apt_ext.vb
    assert opt.FusedFP4Linear is nn.FP4Linear and opt.VGPUStack is vgpu.VGPUStack
    assert opt.get_device_manager is devices.get_device_manager and get_device is devices.get_device
    assert APTModel is model.APTModel and APTTransformer is model.APTModel
    assert APTModelConfiguration is model.APTModelConfiguration
    assert AIMConfig is memory.AIMConfig and create_aim_memory is memory.create_aim_memory
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        opt.nothing


def test_apt_model_ships_in_the_wheel():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert cfg["tool"]["scikit-build"]["wheel"]["packages"] == ["apt_ext", "apt_model"]


def test_cloud_npu_linear_keywords_of_the_design(monkeypatch):
    from apt_ext.cloud import CloudNPULinear as Base
    from apt_model.optimization import CloudNPULinear, get_cloud_npu_manager
    from apt_model.optimization.cloud import disable_cloud_npu
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    try:
        backend = get_cloud_npu_manager().get_backend("huawei")
        assert backend.address == "127.0.0.1:1" and backend.chat is None
        layer = CloudNPULinear(8, 4, cloud_backend=backend, fallback_local=False)
        assert isinstance(layer, Base) and layer.fallback == "error" and layer.resources == {"NPU": 1}
        assert layer.address == "127.0.0.1:1"
        st = backend.status(timeout=0.5)
        assert st["available"] is False and "127.0.0.1:1" in st["detail"]
        assert CloudNPULinear(8, 4).fallback == "local"
        with pytest.raises(TypeError, match="cloud_backend"):
            CloudNPULinear(8, 4, cloud_backend="huawei")
        with pytest.raises(TypeError, match="fallback_local"):
            CloudNPULinear(8, 4, fallback_local="yes")
        with pytest.raises(ValueError, match="provider"):
            get_cloud_npu_manager().get_backend("salad")
    finally:
        disable_cloud_npu()


def test_enable_cloud_npu_auto_enables_only_what_is_configured(monkeypatch):
    from apt_model.optimization import enable_cloud_npu, get_cloud_npu_manager
    from apt_model.optimization.cloud import disable_cloud_npu
    for name in ("MAAS_API_KEY", "HUAWEI_CLOUD_API_KEY", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    try:
        assert enable_cloud_npu("auto") == [] and not get_cloud_npu_manager().is_any_available()
        monkeypatch.setenv("MAAS_API_KEY", "k")
        monkeypatch.setenv("MAAS_BASE_URL", "http://127.0.0.1:1/v1")
        assert enable_cloud_npu("auto") == ["huawei"]
        chat = get_cloud_npu_manager().get_backend("huawei").chat
        assert chat.base_url == "http://127.0.0.1:1/v1" and chat.key_source == "MAAS_API_KEY"
        with pytest.raises(TypeError, match="provider"):
            enable_cloud_npu(3)
    finally:
        disable_cloud_npu()
