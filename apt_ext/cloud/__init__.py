"""Cloud accelerator backends (docs/cloud.md).

- ``apt-ext serve`` / :func:`create_app`: an APT checkpoint behind an OpenAI-compatible HTTP API.
- :class:`ChatBackend`: any OpenAI-compatible endpoint (presets "modelarts", "openai", "local")
  with retries, streaming, a local fallback model and ``get_stats()``.
- :class:`RemoteModule` / :class:`CloudNPULinear`: a module's forward (and backward) in a Ray
  actor on a node with a GPU/NPU/HPU, with local fallback and ``get_stats()``.
- :func:`backends_report`: what is configured here and whether it answered (vb, apt-ext info).

FastAPI, uvicorn, openai, httpx and Ray come with ``pip install 'apt_ext[cloud]'``; they are
imported only when the part that needs them is used.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "LocalModel": "apt_ext.cloud.local_model", "Completion": "apt_ext.cloud.local_model",
    "ChatBackend": "apt_ext.cloud.client", "CloudBackendError": "apt_ext.cloud.client",
    "create_app": "apt_ext.cloud.server", "ServerLimits": "apt_ext.cloud.server",
    "RemoteModule": "apt_ext.cloud.remote", "CloudNPULinear": "apt_ext.cloud.remote",
    "RemoteModuleError": "apt_ext.cloud.remote", "connect": "apt_ext.cloud.remote",
    "backends_report": "apt_ext.cloud.report", "PRESETS": "apt_ext.cloud.presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'apt_ext.cloud' has no attribute {name!r}")
