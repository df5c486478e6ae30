"""Launching a ``@triton.jit`` kernel with less host time than ``kernel[grid](...)``.

Every ``kernel[grid](...)`` call redoes Triton's JIT dispatch on the host: bind the arguments,
specialise each one (dtype and 16-byte alignment of every pointer, integers equal to 1 or
divisible by 16), build a cache key from that and the options, check the kernel's globals, build
the launch metadata. For a kernel of a few microseconds of GPU time that is most of an eager
call (benchmarks/results/fp4_triton_host_NVIDIA_H200.json: the FP4 GEMV's launch 34.9 us of host
time where the launcher's C call is a fraction of it).

:class:`Launcher` keeps, per specialisation, the kernel that the first such launch compiled and
later launches it through its launcher directly. Its key is what Triton specialises on, computed
the same way for every argument (:func:`_arg_key`), plus the constexprs, num_warps, num_stages
and the current device; so a call that Triton would compile differently (another dtype, a
pointer off 16 bytes, a size that stops dividing by 16) misses and goes through the JIT again.

The direct launch needs Triton's launcher convention of 3.4 and later (``triton.knobs``: all
bound arguments, constexprs included, after the grid, stream, function and metadata) and runs on
NVIDIA GPUs only (AMD's backend also specialises pointers on their buffer's size). With an older
Triton, on ROCm and XPU, under ``TRITON_INTERPRET=1``, while a launch hook is installed
(profilers such as proton install one), and with ``APT_TRITON_DIRECT_LAUNCH=0`` in the
environment at import or after ``set_direct_launch(False)``, every launch goes through the JIT.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Hashable

import torch
import triton

from apt_ext.triton.fp4_decode import INTERPRET

_KNOBS = getattr(triton, "knobs", None)
# NVIDIA only: AMD's backend also specialises a pointer on its buffer's size (buffer loads), which
# the key here does not read (a CUDA build of torch, asked without touching the driver)
_NVIDIA = torch.version.cuda is not None and torch.version.hip is None
_ENABLED = [os.environ.get("APT_TRITON_DIRECT_LAUNCH") != "0"]  # read once: the env is not read per launch
_INT32 = (-(1 << 31), 1 << 31)  # Triton passes integers in this range as int32
_UINT64_MIN = 1 << 63  # and from this one as uint64 (int64 between)


def direct_launch_enabled() -> bool:
    """Whether :class:`Launcher` may skip the JIT dispatch now (see the module's docstring)."""
    if INTERPRET or _KNOBS is None or not _NVIDIA or not _ENABLED[0]:
        return False
    rt = _KNOBS.runtime
    # a hook is None or a HookChain (Triton 3.6+); either is idle without calls
    return not getattr(rt.launch_enter_hook, "calls", rt.launch_enter_hook) and \
        not getattr(rt.launch_exit_hook, "calls", rt.launch_exit_hook)


def set_direct_launch(enabled: bool) -> None:
    """Allow (the default, unless ``APT_TRITON_DIRECT_LAUNCH=0`` was set at import) or forbid
    direct launches from now on (benchmarks time both ways in one process)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected a bool, got {type(enabled).__name__}")
    _ENABLED[0] = enabled


def on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context making ``t``'s GPU the current device where it is another one (Triton launches
    on the current device, on its current stream, whatever GPU the tensors are on); a no-op
    context for CPU tensors and for a tensor on the current GPU (the common case: no device
    switch, one device query)."""
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def _arg_key(a: Any) -> Hashable:
    """What Triton's specialisation reads from one runtime argument: a tensor's dtype and whether
    its data pointer is 16-byte aligned; an integer's width and whether it is 1 or a multiple of
    16; a bool or float's type; None."""
    if isinstance(a, torch.Tensor):
        return a.dtype, a.data_ptr() & 15 == 0
    if isinstance(a, bool):
        return bool
    if isinstance(a, int):
        return a == 1, a & 15 == 0, _INT32[0] <= a < _INT32[1], a < _UINT64_MIN
    if isinstance(a, float):
        return float
    if a is None:
        return None
    raise TypeError(f"args: a Triton launch takes tensors, ints, floats, bools or None, got {type(a).__name__}")


def _device_and_stream() -> tuple:
    """Triton's active driver's (current device, current stream of a device) functions."""
    from triton.runtime import driver
    return driver.active.get_current_device, driver.active.get_current_stream


class Launcher:
    """Launches of one ``@triton.jit`` kernel whose constexpr parameters all follow its runtime
    parameters. ``launcher(grid, args, constexprs, **options)`` does what
    ``fn[grid](*args, **constexprs, **options)`` does (options: num_warps, num_stages, ...)."""

    def __init__(self, fn: triton.runtime.JITFunction) -> None:
        self.fn = fn
        self._bound: dict[Hashable, tuple] = {}
        self._driver: tuple | None = None
        params = getattr(fn, "params", None)  # None under TRITON_INTERPRET=1, which launches through the JIT
        if params is None:
            self.n_args, self.constexpr_names = None, None
            return
        n_args = sum(not p.is_constexpr for p in params)
        if not all(p.is_constexpr for p in params[n_args:]):
            raise ValueError(f"fn: {fn.__name__} must declare its constexpr parameters after the others")
        self.n_args = n_args
        self.constexpr_names = tuple(p.name for p in params[n_args:])

    def __call__(self, grid: tuple[int, ...], args: tuple, constexprs: dict[str, Any], **options: Any) -> None:
        if not direct_launch_enabled():
            self.fn[grid](*args, **constexprs, **options)
            return
        if self._driver is None:
            self._driver = _device_and_stream()
        current_device, current_stream = self._driver
        device = current_device()
        if len(args) != self.n_args or len(constexprs) != len(self.constexpr_names):
            raise self._bad_arguments(args, constexprs)
        try:
            tail = tuple(constexprs[name] for name in self.constexpr_names)
        except KeyError:
            raise self._bad_arguments(args, constexprs) from None
        # _arg_key, with its two common cases inline (a generator of calls costs about twice the host time)
        key = (device, tail, *options.items(),
               *((a.dtype, a.data_ptr() & 15 == 0) if type(a) is torch.Tensor else
                 (a == 1, a & 15 == 0, _INT32[0] <= a < _INT32[1], a < _UINT64_MIN) if type(a) is int else
                 _arg_key(a) for a in args))
        bound = self._bound.get(key)
        if bound is None:  # the first launch of this specialisation compiles it through the JIT
            kernel = self.fn[grid](*args, **constexprs, **options)
            if hasattr(kernel, "result"):  # an asynchronous compile's future
                kernel = kernel.result()
            if kernel is not None:
                self._bound[key] = (kernel.run, kernel.function, kernel.packed_metadata)
            return
        run, function, metadata = bound
        g1 = grid[1] if len(grid) > 1 else 1
        g2 = grid[2] if len(grid) > 2 else 1
        run(grid[0], g1, g2, current_stream(device), function, metadata, None, None, None, *args, *tail)

    def _bad_arguments(self, args: tuple, constexprs: dict[str, Any]) -> ValueError:
        return ValueError(f"args, constexprs: {self.fn.__name__} takes {self.n_args} runtime arguments and the "
                          f"constexprs {list(self.constexpr_names)}, got {len(args)} and {list(constexprs)}")
