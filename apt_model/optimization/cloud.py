"""The design document's cloud-NPU calls, as small adapters over :mod:`apt_ext.cloud`.

    enable_cloud_npu("auto")                  # register the backends configured in the environment
    manager = get_cloud_npu_manager()
    backend = manager.get_backend("huawei")
    layer = CloudNPULinear(768, 3072, cloud_backend=backend, fallback_local=True)
    layer.get_stats()["cloud_ratio"]

What a backend is here. The document's "huawei" backend (Huawei Cloud, Ascend NPU) has two faces
in apt_ext, and a :class:`CloudNPUBackend` carries both:
- ``resources`` / ``address``: where a layer runs. ``CloudNPULinear`` runs its forward in a Ray
  actor on a node of the Ray cluster at ``address`` (``RAY_ADDRESS``; None starts a local Ray
  instance) that has ``resources`` ({"NPU": 1}: an Ascend NPU with torch_npu), and falls back to
  the local copy when no node has them (``apt_ext.cloud.RemoteModule``).
- ``chat``: the platform's OpenAI-compatible text endpoint, ``apt_ext.cloud.ChatBackend``
  ("modelarts" preset: ModelArts MaaS, key from ``MAAS_API_KEY`` or the document's
  ``HUAWEI_CLOUD_API_KEY``, URL from ``MAAS_BASE_URL`` / ``HUAWEI_CLOUD_ENDPOINT``, model from
  ``MAAS_MODEL`` / ``HUAWEI_CLOUD_MODEL``); None when no key is set. MaaS serves chat models: it
  cannot run a Linear layer, so ``CloudNPULinear`` never sends tensors to it.
SaladCloud and RunPod, which the document lists as "waiting for NPU support", are not backends.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from apt_ext.cloud import remote
from apt_ext.cloud.presets import get_preset
from apt_ext.cloud.report import ping_endpoint, ping_tcp

# provider -> (Ray resources its layers need, ChatBackend preset of its text endpoint)
PROVIDERS = {"huawei": ({"NPU": 1}, "modelarts")}


@dataclass
class CloudNPUBackend:
    """One provider's accelerators: Ray ``resources`` at ``address`` for layers, ``chat`` for text."""
    name: str
    resources: dict[str, float]
    address: str | None
    chat: object | None = None          # apt_ext.cloud.ChatBackend, when its key is configured
    configured_by: list[str] = field(default_factory=list)

    def status(self, timeout: float = 2.0) -> dict:
        """Whether anything of this backend answers now: the chat endpoint (GET /models) and the
        Ray head (TCP connect to ``address``). Keys: available, chat, ray, detail."""
        chat = ray = None
        if self.chat is not None:
            chat = ping_endpoint(self.chat.base_url, self.chat.api_key, timeout)
        if self.address and self.address != "auto":
            ray = ping_tcp(self.address.removeprefix("ray://"), timeout)
        answered = [r for r in (chat, ray) if r is not None]
        detail = "; ".join(r["detail"] for r in answered) or (
            "nothing configured: set MAAS_API_KEY (or HUAWEI_CLOUD_API_KEY) for the chat endpoint, "
            "RAY_ADDRESS for a Ray cluster with the accelerator")
        return {"available": any(r["answered"] for r in answered), "chat": chat, "ray": ray, "detail": detail}

    def is_available(self) -> bool:
        """True when the chat endpoint or the Ray head answered just now."""
        return self.status()["available"]


def _make_backend(name: str) -> CloudNPUBackend:
    if name not in PROVIDERS:
        raise ValueError(f"provider: expected one of {sorted(PROVIDERS)} or 'auto', got {name!r} "
                         "(SaladCloud and RunPod offer no NPU; use apt_ext.cloud.RemoteModule with "
                         "resources={'GPU': 1} on a Ray cluster there)")
    resources, preset_name = PROVIDERS[name]
    preset = get_preset(preset_name)
    key, key_var = preset.env(preset.key_env)
    address = os.environ.get("RAY_ADDRESS", "").strip() or None
    chat = None
    if key:
        from apt_ext.cloud import ChatBackend
        chat = ChatBackend(preset_name)
    return CloudNPUBackend(name, dict(resources), address, chat,
                           [v for v in (key_var, "RAY_ADDRESS" if address else None) if v])


class CloudNPUManager:
    """The backends enabled in this process (``get_cloud_npu_manager()`` returns the one instance)."""

    def __init__(self) -> None:
        self._backends: dict[str, CloudNPUBackend] = {}
        self._lock = threading.Lock()

    def get_backend(self, name: str) -> CloudNPUBackend:
        """The backend ``name`` ("huawei"), enabled now if it was not yet."""
        with self._lock:
            if name not in self._backends:
                self._backends[name] = _make_backend(name)
            return self._backends[name]

    def list_backends(self) -> list[str]:
        with self._lock:
            return sorted(self._backends)

    def is_any_available(self) -> bool:
        """True when some enabled backend answers now (see CloudNPUBackend.status)."""
        return any(self.get_backend(n).is_available() for n in self.list_backends())

    def clear(self) -> None:
        """Forget every backend (closing their chat clients)."""
        with self._lock:
            for b in self._backends.values():
                if b.chat is not None:
                    b.chat.close()
            self._backends.clear()


_manager = CloudNPUManager()


def get_cloud_npu_manager() -> CloudNPUManager:
    return _manager


def enable_cloud_npu(provider: str = "auto") -> list[str]:
    """Enable ``provider`` ("huawei"), or with "auto" every provider configured in the
    environment (its API key variable or ``RAY_ADDRESS`` set). Returns the enabled names. An
    enabled backend with a chat endpoint appears in ``vb.enable()``'s report."""
    if not isinstance(provider, str):
        raise TypeError(f"provider: expected a str, got {type(provider).__name__}")
    if provider != "auto":
        _manager.get_backend(provider)
        return _manager.list_backends()
    for name, (_, preset_name) in PROVIDERS.items():
        preset = get_preset(preset_name)
        if preset.env(preset.key_env)[0] or os.environ.get("RAY_ADDRESS", "").strip():
            _manager.get_backend(name)
    return _manager.list_backends()


def disable_cloud_npu() -> None:
    """Forget every enabled backend."""
    _manager.clear()


class CloudNPULinear(remote.CloudNPULinear):
    """``apt_ext.cloud.CloudNPULinear`` with the design document's keyword arguments:
    ``cloud_backend`` (a :class:`CloudNPUBackend`: its ``resources`` and Ray ``address`` place the
    actor; default {"NPU": 1} on ``RAY_ADDRESS`` or a local Ray instance) and ``fallback_local``
    (True: a failed or impossible remote call runs on the local copy; False: it raises
    ``apt_ext.cloud.RemoteModuleError``). Other keywords go to apt_ext's class."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 cloud_backend: CloudNPUBackend | None = None, fallback_local: bool = True, **kwargs) -> None:
        if cloud_backend is not None:
            if not isinstance(cloud_backend, CloudNPUBackend):
                raise TypeError("cloud_backend: expected a backend from get_cloud_npu_manager().get_backend(name), "
                                f"got {type(cloud_backend).__name__}")
            kwargs.setdefault("resources", dict(cloud_backend.resources))
            kwargs.setdefault("address", cloud_backend.address)
        if not isinstance(fallback_local, bool):
            raise TypeError(f"fallback_local: expected a bool, got {fallback_local!r}")
        if "fallback" in kwargs:
            raise TypeError("fallback: pass either fallback_local (the design's name) or use apt_ext.cloud.CloudNPULinear")
        super().__init__(in_features, out_features, bias, fallback="local" if fallback_local else "error", **kwargs)
