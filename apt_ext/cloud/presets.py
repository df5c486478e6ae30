"""Endpoint presets of :class:`apt_ext.cloud.ChatBackend`: where an OpenAI-compatible service
lives and which environment variables carry its key, URL and model.

``modelarts`` is Huawei Cloud ModelArts Studio (MaaS). Its documented chat endpoint is
``https://api.modelarts-maas.com/v1/chat/completions`` with ``Authorization: Bearer <API key>``
("Sending a Chat Request (Chat/POST)",
https://support.huaweicloud.com/intl/pt-br/usermanual-maas-modelarts/maas-modelarts-0078.html),
so the OpenAI base URL is ``https://api.modelarts-maas.com/v1`` (Huawei's FAQ on the model
service API URL format, modelarts_faq/modelarts_11_0063: drop ``/chat/completions``).
Huawei's examples write the key as ``MAAS_API_KEY``; we read that variable, then the original
design's ``HUAWEI_CLOUD_API_KEY``. A service deployed under "My Services" can have its own URL: set
``MAAS_BASE_URL`` (or ``HUAWEI_CLOUD_ENDPOINT``) to the one its "View Call Description" page shows.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    base_url: str                      # default OpenAI-style base URL (ends in /v1)
    url_env: tuple[str, ...]           # environment variables that override base_url, first set wins
    key_env: tuple[str, ...]           # environment variables holding the API key, first set wins
    model_env: tuple[str, ...]         # environment variables naming the model
    default_model: str | None = None   # None: ask the endpoint's /v1/models
    key_required: bool = True          # False: a server that may run without authentication

    def env(self, names: tuple[str, ...]) -> tuple[str | None, str | None]:
        """(value, variable name) of the first non-empty variable in ``names``."""
        for n in names:
            v = os.environ.get(n, "").strip()
            if v:
                return v, n
        return None, None


PRESETS: dict[str, Preset] = {
    "modelarts": Preset("modelarts", "https://api.modelarts-maas.com/v1",
                        url_env=("MAAS_BASE_URL", "HUAWEI_CLOUD_ENDPOINT"),
                        key_env=("MAAS_API_KEY", "HUAWEI_CLOUD_API_KEY"),
                        model_env=("MAAS_MODEL", "HUAWEI_CLOUD_MODEL"), default_model="DeepSeek-V3"),
    "openai": Preset("openai", "https://api.openai.com/v1", url_env=("OPENAI_BASE_URL",),
                     key_env=("OPENAI_API_KEY",), model_env=("OPENAI_MODEL",), default_model="gpt-4o-mini"),
    "local": Preset("local", "http://127.0.0.1:8000/v1", url_env=("APT_SERVE_URL",),
                    key_env=("APT_API_KEY",), model_env=("APT_SERVE_MODEL",), key_required=False),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]
