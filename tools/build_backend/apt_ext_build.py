"""apt_ext's build backend: scikit-build-core, plus two rules of a C++ torch extension.

1. It builds against the torch already installed where it will run, so it refuses an isolated
   build environment (pip's default, which would download a multi-GB torch into it and then fail
   in CMake): every wheel/editable hook first imports torch and, if it cannot, stops with one line
   that says what to run instead.
2. The wheel declares the torch release it was compiled against (``torch==2.13.0``) instead of the
   source's ``torch>=2.4``: the METADATA of the wheel (and of pip's metadata preparation) is
   rewritten at build time. apt_ext/_native.py checks the same at import (apt_ext/_build_config.py).

pyproject.toml names this module as ``build-backend`` with ``backend-path = ["tools/build_backend"]``.
"""
from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path

from scikit_build_core import build as _skbuild
from scikit_build_core.build import build_sdist, get_requires_for_build_sdist  # noqa: F401  (sdists need no torch)

ISOLATION_FIX = ("apt_ext: torch cannot be imported in this build environment (pip's build isolation?): apt_ext is "
                 "compiled against the torch you have installed; run: pip install --no-build-isolation .")
_TORCH_REQ = re.compile(r"^Requires-Dist: torch(?![\w.-])[^;\n]*$", re.M)


def build_torch_version() -> str:
    """The torch release to build against ('2.13.0' for 2.13.0+cpu); SystemExit with the fix if none."""
    try:
        import torch
    except ImportError:
        raise SystemExit(ISOLATION_FIX) from None
    return str(torch.__version__).split("+", 1)[0]


def pin_torch(metadata: str, version: str) -> str:
    """METADATA text with its unconditional torch requirement replaced by ``torch==version``."""
    pinned, n = _TORCH_REQ.subn(f"Requires-Dist: torch=={version}", metadata)
    if n != 1:
        raise RuntimeError(f"apt_ext build: expected one 'Requires-Dist: torch' line in METADATA, found {n}")
    return pinned


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def pin_torch_in_wheel(wheel: Path, version: str) -> None:
    """Rewrite ``wheel`` in place: METADATA pins torch, RECORD carries METADATA's new hash and size."""
    with zipfile.ZipFile(wheel) as zin:
        items = [(info, zin.read(info)) for info in zin.infolist()]
    meta_name = next(i.filename for i, _ in items if re.fullmatch(r"[^/]+\.dist-info/METADATA", i.filename))
    record_name = meta_name.rsplit("/", 1)[0] + "/RECORD"
    contents = {i.filename: d for i, d in items}
    meta = pin_torch(contents[meta_name].decode(), version).encode()
    record = [line for line in contents[record_name].decode().splitlines() if line]
    record = [f"{meta_name},{_record_hash(meta)},{len(meta)}" if line.split(",", 1)[0] == meta_name else line
              for line in record]
    contents[meta_name] = meta
    contents[record_name] = ("\n".join(record) + "\n").encode()
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info, _ in items:
            zout.writestr(info, contents[info.filename])
    tmp.replace(wheel)


def get_requires_for_build_wheel(config_settings=None):
    build_torch_version()
    return _skbuild.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings=None):
    build_torch_version()
    return _skbuild.get_requires_for_build_editable(config_settings)


def _prepare(hook, metadata_directory, config_settings):
    version = build_torch_version()
    dist_info = hook(metadata_directory, config_settings)
    meta = Path(metadata_directory) / dist_info / "METADATA"
    meta.write_text(pin_torch(meta.read_text(), version))
    return dist_info


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return _prepare(_skbuild.prepare_metadata_for_build_wheel, metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    return _prepare(_skbuild.prepare_metadata_for_build_editable, metadata_directory, config_settings)


# metadata_directory (from prepare_metadata_*, already pinned) is not handed on: scikit-build-core
# would find it differs from the METADATA it writes; the wheel gets the same pin afterwards.
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    version = build_torch_version()
    name = _skbuild.build_wheel(wheel_directory, config_settings)
    pin_torch_in_wheel(Path(wheel_directory) / name, version)
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    version = build_torch_version()
    name = _skbuild.build_editable(wheel_directory, config_settings)
    pin_torch_in_wheel(Path(wheel_directory) / name, version)
    return name
