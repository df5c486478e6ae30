"""apt_ext.triton.launch on the CPU: which launches go through Triton's JIT and which through the
bound kernel's launcher, with what arguments. The JIT and the compiled kernel are stand-ins that
record their calls (there is no GPU here); tests/gpu/test_fp4_cuda.py runs the real launches."""
from __future__ import annotations

import contextlib

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from apt_ext.triton import launch  # noqa: E402


@triton.jit
def _kernel(x_ptr, out_ptr, n, steps, SCALE: tl.constexpr, BLOCK: tl.constexpr):
    pass


@triton.jit
def _constexpr_first(BLOCK: tl.constexpr, x_ptr):
    pass


class _Compiled:
    """A compiled kernel's launcher attributes; records each direct launch's arguments."""

    def __init__(self) -> None:
        self.function, self.packed_metadata, self.launches = "function", "metadata", []

    def run(self, *args) -> None:
        self.launches.append(args)


class _Jit:
    """A JITFunction's parameters and ``fn[grid](...)``; records each JIT launch."""

    def __init__(self, fn) -> None:
        self.params, self.__name__ = fn.params, fn.__name__
        self.compiled, self.launches = _Compiled(), []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.launches.append((grid, args, kwargs))
            return self.compiled
        return run


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(launch, "_NVIDIA", True)  # the CPU wheel's torch is no CUDA build
    monkeypatch.setattr(launch, "INTERPRET", False)
    lau = launch.Launcher(_kernel)
    lau.fn = _Jit(_kernel)
    lau._driver = (lambda: 0, lambda device: f"stream{device}")
    yield lau
    launch.set_direct_launch(True)


def _call(lau: launch.Launcher, x: torch.Tensor, n: int = 64, steps: int = 3, scale: float = 2.0) -> None:
    lau((4, 2), (x, x, n, steps), dict(BLOCK=128, SCALE=scale), num_warps=4, num_stages=2)


def test_first_launch_compiles_then_the_launcher_runs_directly(launcher: launch.Launcher) -> None:
    x = torch.randn(64)
    _call(launcher, x)
    assert len(launcher.fn.launches) == 1
    grid, args, kwargs = launcher.fn.launches[0]
    assert grid == (4, 2) and args == (x, x, 64, 3)
    assert kwargs == dict(BLOCK=128, SCALE=2.0, num_warps=4, num_stages=2)
    _call(launcher, x, steps=5)  # same specialisation (5 and 3: neither 1 nor a multiple of 16)
    assert len(launcher.fn.launches) == 1
    (direct,) = launcher.fn.compiled.launches
    # grid padded to 3-D, stream, function, metadata, no launch metadata or hooks, then every
    # argument in signature order: constexprs in their declared order (SCALE before BLOCK)
    assert direct == (4, 2, 1, "stream0", "function", "metadata", None, None, None, x, x, 64, 5, 2.0, 128)


@pytest.mark.parametrize("change", ["misaligned", "dtype", "int_one", "int_div16", "constexpr", "options"])
def test_a_new_specialisation_goes_through_the_jit(launcher: launch.Launcher, change: str) -> None:
    base = torch.randn(80)
    _call(launcher, base[:64])
    calls = {
        "misaligned": lambda: _call(launcher, base[1:65]),          # 4 bytes past a 16-byte boundary
        "dtype": lambda: _call(launcher, base[:64].double()),
        "int_one": lambda: _call(launcher, base[:64], steps=1),     # Triton makes 1 a constant
        "int_div16": lambda: _call(launcher, base[:64], n=65),      # 64 divides by 16, 65 does not
        "constexpr": lambda: _call(launcher, base[:64], scale=3.0),
        "options": lambda: launcher((4, 2), (base[:64], base[:64], 64, 3), dict(BLOCK=128, SCALE=2.0),
                                    num_warps=8, num_stages=2),
    }
    calls[change]()
    assert len(launcher.fn.launches) == 2 and not launcher.fn.compiled.launches
    calls[change]()  # now bound
    assert len(launcher.fn.launches) == 2 and len(launcher.fn.compiled.launches) == 1


def test_disabled_or_hooked_launches_go_through_the_jit(launcher: launch.Launcher,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(64)
    launch.set_direct_launch(False)
    _call(launcher, x)
    _call(launcher, x)
    assert len(launcher.fn.launches) == 2 and not launcher.fn.compiled.launches
    launch.set_direct_launch(True)
    _call(launcher, x)
    hooks = launch._KNOBS.runtime
    hook = getattr(hooks.launch_enter_hook, "calls", None)
    if hook is None:
        monkeypatch.setattr(hooks, "launch_enter_hook", lambda *a: None)
    else:
        monkeypatch.setattr(hooks.launch_enter_hook, "calls", [lambda *a: None])
    _call(launcher, x)  # a profiler's hook sees every launch: the JIT runs it
    assert len(launcher.fn.launches) == 4 and not launcher.fn.compiled.launches


def test_bad_arguments_are_named(launcher: launch.Launcher) -> None:
    x = torch.randn(64)
    with pytest.raises(ValueError, match="args, constexprs: _kernel takes 4 runtime arguments"):
        launcher((1,), (x, x, 64), dict(BLOCK=128, SCALE=2.0))
    with pytest.raises(ValueError, match="constexprs"):
        launcher((1,), (x, x, 64, 3), dict(BLOCK=128, SCALES=2.0))
    with pytest.raises(TypeError, match="args: a Triton launch takes"):
        launcher((1,), (x, x, 64, "3"), dict(BLOCK=128, SCALE=2.0))
    with pytest.raises(ValueError, match="fn: _constexpr_first must declare its constexpr parameters after"):
        launch.Launcher(_constexpr_first)
    with pytest.raises(TypeError, match="enabled: expected a bool"):
        launch.set_direct_launch(1)


def test_arg_key_reads_what_triton_specialises_on() -> None:
    key = launch._arg_key
    t = torch.zeros(8)
    assert key(t) == (torch.float32, True) and key(t[1:]) == (torch.float32, False)
    assert key(1) != key(2) and key(16) != key(17) and key(17) == key(3)
    assert key(1 << 31) != key(17) and key((1 << 63) + 1) != key((1 << 31) + 1)
    assert key(True) != key(1) and key(2.5) == key(0.0) and key(None) is None


class _GpuTensor:
    """What on_device reads of a tensor: is_cuda and device (no GPU here)."""

    def __init__(self, index: int) -> None:
        self.is_cuda, self.device = True, torch.device("cuda", index)


def test_on_device_switches_only_to_another_gpu(monkeypatch):
    entered = []

    class _Device:
        def __init__(self, device) -> None:
            self.index = device.index

        def __enter__(self):
            entered.append(self.index)

        def __exit__(self, *exc):
            entered.append("exit")

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", _Device)
    for t in (_GpuTensor(0), torch.zeros(1)):  # the current GPU, the CPU (the interpreter)
        with launch.on_device(t):
            pass
    assert entered == []
    with launch.on_device(_GpuTensor(1)):
        assert entered == [1]
    assert entered == [1, "exit"]


def test_kernel_decorator_runs_on_the_first_tensors_device(monkeypatch):
    """apt_ext.triton.kernel wraps each implementation in on_device(first argument), registered
    and recorded as the wrapper (a native op's device guard)."""
    import apt_ext.triton as apt_triton

    seen, registered = [], []
    monkeypatch.setattr(launch, "on_device", lambda t: (seen.append(t), contextlib.nullcontext())[1])
    monkeypatch.setattr(apt_triton, "register_kernel", lambda *a: registered.append(a))
    monkeypatch.setattr(apt_triton, "KERNELS", {})
    monkeypatch.setenv("APT_FORCE_TRITON", "1")

    @apt_triton.kernel("test_op")
    def impl(x, scale, *, shift=0):
        """doc"""
        return x * scale + shift

    x = torch.ones(2)
    assert torch.equal(impl(x, 3, shift=1), torch.full((2,), 4.0)) and seen == [x]
    assert apt_triton.KERNELS["test_op"] is impl and registered[0][3] is impl
    assert impl.__name__ == "impl" and impl.__doc__ == "doc"
