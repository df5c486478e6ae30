"""Which cloud backends are configured here and whether each answered (for ``vb.enable()`` and
``apt-ext info``). Standard library only: importing it costs nothing and needs no extra.

Configured means: an endpoint preset whose key variable is set (``MAAS_API_KEY``,
``OPENAI_API_KEY``, ...), ``APT_SERVE_URL`` for an ``apt-ext serve``, ``RAY_ADDRESS`` for a Ray
cluster, and every ``ChatBackend`` / ``RemoteModule`` alive in this process. "Answered" is a
real check: an HTTP GET of the endpoint's ``/models`` (any HTTP status counts as an answer; the
status is reported), a TCP connection to the Ray head, or the remote module's actor state. No
speed-up is ever claimed.
"""
from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
import weakref

_live: "weakref.WeakSet" = weakref.WeakSet()


def register(backend) -> None:
    """Called by ChatBackend and RemoteModule: list ``backend`` while it is alive."""
    _live.add(backend)


def ping_endpoint(base_url: str, api_key: str | None, timeout: float = 2.0) -> dict:
    """GET ``base_url/models``: {"answered": bool, "status": int | None, "detail": str}."""
    req = urllib.request.Request(base_url.rstrip("/") + "/models",
                                 headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = json.loads(r.read() or b"{}")
            ids = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
            return {"answered": True, "status": r.status, "detail": f"HTTP {r.status}, models {ids[:5]}"}
    except urllib.error.HTTPError as exc:
        what = "key refused" if exc.code in (401, 403) else exc.reason
        return {"answered": True, "status": exc.code, "detail": f"HTTP {exc.code} ({what})"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"answered": False, "status": None, "detail": f"no answer: {reason}"}


def ping_tcp(address: str, timeout: float = 2.0) -> dict:
    """TCP connect to ``host:port`` (a Ray head's GCS address)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return {"answered": False, "status": None, "detail": f"not a host:port address: {address!r}"}
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return {"answered": True, "status": None, "detail": f"TCP connect to {address} ok"}
    except OSError as exc:
        return {"answered": False, "status": None, "detail": f"no answer from {address}: {exc}"}


def backends_report(ping: bool = True, timeout: float = 2.0) -> list[dict]:
    """One dict per configured backend: name, kind ("chat" | "ray"), endpoint, answered
    (True/False, None when ``ping`` is False), detail and, for live objects, their stats."""
    from apt_ext.cloud.presets import PRESETS
    rows: list[dict] = []
    seen: set[str] = set()
    for obj in list(_live):
        row = obj.backend_status(ping=ping, timeout=timeout)
        seen.add(row["endpoint"])
        rows.append(row)
    for p in PRESETS.values():
        key, var = p.env(p.key_env)
        url, url_var = p.env(p.url_env)
        if not (key or (url_var and not p.key_required)):
            continue
        endpoint = (url or p.base_url).rstrip("/")
        if endpoint in seen:
            continue
        seen.add(endpoint)
        row = {"name": p.name, "kind": "chat", "endpoint": endpoint,
               "configured_by": var or url_var, "answered": None, "detail": "not checked"}
        if ping:
            row.update({k: v for k, v in ping_endpoint(endpoint, key, timeout).items() if k != "status"})
        rows.append(row)
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if address and f"ray://{address}" not in seen and address not in seen:
        row = {"name": "ray", "kind": "ray", "endpoint": address, "configured_by": "RAY_ADDRESS",
               "answered": None, "detail": "not checked"}
        if ping and address != "auto":
            row.update({k: v for k, v in ping_tcp(address.removeprefix("ray://"), timeout).items() if k != "status"})
        rows.append(row)
    return rows


def format_backends(rows: list[dict]) -> list[str]:
    """Report lines, one per backend."""
    if not rows:
        return ["cloud backends: none configured (docs/cloud.md)"]
    out = ["cloud backends:"]
    for r in rows:
        state = {True: "answered", False: "NO ANSWER", None: "not checked"}[r["answered"]]
        out.append(f"  {r['name']:10s} {r['kind']:4s} {r['endpoint']}  {state}: {r['detail']}")
    return out
