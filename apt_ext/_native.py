"""Loads the compiled extension ``apt_ext._C`` once; the rest of the package asks here.

Importing ``_C`` runs the static ``TORCH_LIBRARY`` registrations, which define the
``torch.ops.apt.*`` ops and their C++ CPU/CUDA kernels. If the import fails (a source checkout
that was never built, a torch ABI mismatch), ``import apt_ext`` still works (``apt-ext info``
reports the failure), and ``torch.ops.apt`` becomes a stand-in whose every attribute raises
:class:`NativeLoadError` with the original load error and the command that fixes it, instead
of torch's "'_OpNamespace' 'apt' object has no attribute ...".

A built _C is bound to the torch release it was compiled against (apt_ext/_build_config.py,
written by the build): under another torch, ``import apt_ext`` raises :class:`TorchMismatchError`
at once, naming both versions and the fix, instead of a missing-symbol error or a crash.
"""
from __future__ import annotations

import torch

BUILD_HINT = ("Build it against the torch you run with `pip install --no-build-isolation -e .` "
              "(or `bash tools/setup_env.sh`), then restart Python.")


class NativeLoadError(ImportError):
    """The native extension apt_ext._C could not be loaded; the message carries the reason."""


class TorchMismatchError(ImportError):
    """apt_ext._C was built against another torch release than the one loaded."""


def public_version(version: str) -> str:
    """'2.13.0+cpu' -> '2.13.0' (the release, without the local build label)."""
    return str(version).split("+", 1)[0]


def check_torch_version(built: str, loaded: str) -> None:
    """Raise :class:`TorchMismatchError` unless the ``built`` and ``loaded`` torch releases match."""
    if public_version(built) != public_version(loaded):
        raise TorchMismatchError(
            f"apt_ext was built against torch {built}, but torch {loaded} is loaded. Install "
            f"torch=={public_version(built)}, or rebuild apt_ext against this torch: "
            "pip install --no-build-isolation .")


try:
    from apt_ext import _build_config
except ImportError:  # a source checkout that was never built: _C's import below says so
    _build_config = None
if _build_config is not None:
    check_torch_version(_build_config.TORCH_VERSION, torch.__version__)

try:
    from apt_ext import _C  # noqa: F401  (registers torch.ops.apt.*)

    LOAD_ERROR: str | None = None
except ImportError as exc:
    _C = None
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"


def load_error_message(what: str) -> str:
    """Why ``what`` cannot run: the original load error of ``_C`` and what to do."""
    return f"{what} needs apt_ext._C (the native kernels), which could not be loaded: {LOAD_ERROR}. {BUILD_HINT}"


class _MissingOps:
    """Stands in for ``torch.ops.apt`` when ``_C`` failed to load: naming any op raises."""

    def __getattr__(self, name: str):
        if name.startswith("__"):  # copy/pickle/introspection probes are not uses of an op
            raise AttributeError(name)
        raise NativeLoadError(load_error_message(f"torch.ops.apt.{name}"))


if _C is None:
    torch.ops.apt = _MissingOps()


def require(what: str = "this feature") -> None:
    """Raise :class:`NativeLoadError` (with the original load error) when ``_C`` is missing."""
    if _C is None:
        raise NativeLoadError(load_error_message(what))


def build_info() -> dict:
    """What the extension was compiled with (CUDA, SIMD, libraries); empty if not built."""
    return dict(_C.build_info()) if _C is not None else {}


def has_kernel(op: str, dispatch_key: str) -> bool:
    """True when ``apt::<op>`` has a kernel registered for ``dispatch_key`` (CPU, CUDA, ...)."""
    if _C is None:
        return False
    return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"apt::{op}", dispatch_key))
