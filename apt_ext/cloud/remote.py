"""Modules whose forward runs on another node's accelerator through Ray, with a local fallback.

    from apt_ext.cloud import RemoteModule, CloudNPULinear
    layer = RemoteModule(nn.Linear(4096, 4096), resources={"GPU": 1})   # or {"NPU": 1}, {"HPU": 1}
    y = layer(x)               # runs in a Ray actor on a node that has the resource
    layer.get_stats()          # calls, fallbacks, bytes moved, latency p50/p95, ...

The wrapped module stays here as the local copy (its parameters are this module's parameters:
optimizers, ``state_dict`` and ``.to()`` see them). On the first call an actor is placed on a node
with ``resources`` (Ray knows GPUs, Ascend NPUs and Gaudi HPUs as resources) and the weights go to
it once through Ray's object store; each call sends its input tensors and gets the output tensor
back. The actor runs the module on ``apt_ext.devices.get_device()`` of its node.

Training works: with gradients enabled the call is an autograd function whose backward sends
(input, grad_output) to the actor and gets the input and parameter gradients back, so the local
parameters get ``.grad``. After an optimizer step changes the local weights, the next call sends
them to the actor again (``weight_syncs`` counts each transfer): weights move once for inference
and once per optimizer step for training.

A call that fails or exceeds ``timeout`` (or finds no node with the resource, or no Ray) runs on
the local copy when ``fallback="local"`` and is counted; ``fallback="error"`` raises
:class:`RemoteModuleError`. A dead actor is replaced on a later call (``retry_after_s``).
``ray.init(address=...)`` (argument or ``RAY_ADDRESS``) joins an existing cluster; otherwise a
local Ray instance is started.
"""
from __future__ import annotations

import copy
import os
import time

import torch
from torch import nn

from apt_ext.cloud import report
from apt_ext.cloud.stats import CallStats

COUNTERS = ("calls", "remote_calls", "failures", "fallbacks", "timeouts", "actor_starts", "weight_syncs",
            "bytes_weights", "bytes_sent", "bytes_received")
FALLBACKS = ("local", "error")


class RemoteModuleError(RuntimeError):
    """The remote call failed and ``fallback="error"``."""


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("Ray is not installed: pip install 'apt_ext[cloud]'") from None
    return ray


def connect(address: str | None = None, **init_kwargs) -> dict:
    """Join the Ray cluster at ``address`` (or ``RAY_ADDRESS``), or start a local instance when
    neither is set and Ray is not running yet; returns the cluster's resources."""
    ray = _ray()
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is None:
            init_kwargs.setdefault("include_dashboard", False)
            init_kwargs.setdefault("object_store_memory", 512 * 2**20)
        init_kwargs.setdefault("log_to_driver", False)
        ray.init(address=address, **init_kwargs)
    return dict(ray.cluster_resources())


def _nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def vjp(module: nn.Module, args: tuple[torch.Tensor, ...], grad_out: torch.Tensor) -> tuple[list, list]:
    """Gradients of ``module(*args)`` against ``grad_out``: (per input, None for non-float
    inputs; per parameter, None where unused)."""
    xs = [a.detach().requires_grad_(a.is_floating_point()) for a in args]
    params = list(module.parameters())
    with torch.enable_grad():
        out = module(*xs)
    wrt = [x for x in xs if x.requires_grad] + [p for p in params if p.requires_grad]
    grads = iter(torch.autograd.grad(out, wrt, grad_out, allow_unused=True))
    gx = [next(grads) if x.requires_grad else None for x in xs]
    gp = [next(grads) if p.requires_grad else None for p in params]
    return gx, gp


class ModuleWorker:
    """The Ray actor: holds the module on its node's best device and runs it."""

    def __init__(self, module: nn.Module) -> None:
        from apt_ext.devices import get_device
        self.device = get_device()
        self.module = module.to(self.device)

    def info(self) -> dict:
        import ray
        return {"device": str(self.device), "node": ray.util.get_node_ip_address(), "pid": os.getpid()}

    def load_state(self, state: dict) -> None:
        self.module.load_state_dict(state)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(*[a.to(self.device) for a in args]).cpu()

    def backward(self, args: tuple, grad_out: torch.Tensor) -> tuple[list, list]:
        gx, gp = vjp(self.module, tuple(a.to(self.device) for a in args), grad_out.to(self.device))
        cpu = lambda gs: [g.cpu() if g is not None else None for g in gs]
        return cpu(gx), cpu(gp)


class _RemoteCall(torch.autograd.Function):
    """Forward and backward of a RemoteModule call, each on the actor (or the local copy)."""

    @staticmethod
    def forward(ctx, owner: "RemoteModule", n_args: int, *tensors: torch.Tensor) -> torch.Tensor:
        args = tensors[:n_args]
        ctx.owner, ctx.n_args, ctx.n_params = owner, n_args, len(tensors) - n_args
        ctx.save_for_backward(*args)
        return owner._run("forward", args)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        args = ctx.saved_tensors
        gx, gp = ctx.owner._run("backward", args, grad_out)
        return (None, None, *gx, *gp)


class RemoteModule(nn.Module):
    """Runs ``module`` in a Ray actor on a node with ``resources`` (see the module docstring).

    ``module``: any nn.Module whose forward takes tensors and returns one tensor.
    ``resources``: e.g. {"GPU": 1}, {"NPU": 1}, {"HPU": 1}, {"CPU": 2}; None places the actor on
    any node (one CPU). ``fallback``: "local" or "error". ``timeout``: seconds per call;
    ``start_timeout``: seconds for the actor to start; ``retry_after_s``: wait before replacing
    a failed actor; ``address``: Ray cluster address (default ``RAY_ADDRESS`` or a local instance).
    """

    def __init__(self, module: nn.Module, resources: dict[str, float] | None = None, *, fallback: str = "local",
                 timeout: float = 30.0, start_timeout: float = 120.0, retry_after_s: float = 10.0,
                 address: str | None = None) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected an nn.Module, got {type(module).__name__}")
        resources = dict(resources or {})
        for k, v in resources.items():
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"resources: expected {{name: amount > 0}}, e.g. {{'GPU': 1}}; got {resources!r}")
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback: expected one of {FALLBACKS}, got {fallback!r}")
        for name, v in (("timeout", timeout), ("start_timeout", start_timeout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name}: expected seconds > 0, got {v!r}")
        if isinstance(retry_after_s, bool) or not isinstance(retry_after_s, (int, float)) or retry_after_s < 0:
            raise ValueError(f"retry_after_s: expected seconds >= 0, got {retry_after_s!r}")
        self.module = module
        self.resources, self.fallback, self.address = resources, fallback, address
        self.timeout, self.start_timeout, self.retry_after_s = float(timeout), float(start_timeout), float(retry_after_s)
        self._actor = None
        self._actor_info: dict = {}
        self._synced: tuple | None = None
        self._next_try = 0.0
        self.unavailable: str | None = None
        self._stats = CallStats(COUNTERS)
        report.register(self)

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if not args or not all(isinstance(a, torch.Tensor) for a in args):
            raise TypeError(f"args: RemoteModule takes tensors only, got {[type(a).__name__ for a in args]}")
        t0 = time.perf_counter()
        self._stats.count("calls")
        try:
            params = [p for p in self.module.parameters()]
            if torch.is_grad_enabled() and any(t.requires_grad for t in list(args) + params):
                return _RemoteCall.apply(self, len(args), *args, *params)
            return self._run("forward", args)
        finally:
            self._stats.observe(time.perf_counter() - t0)

    def _run(self, method: str, args: tuple, grad_out: torch.Tensor | None = None):
        """``method`` ("forward" or "backward") on the actor, else on the local copy."""
        reason = self._ensure_actor()
        if reason is None:
            ray = _ray()
            cpu_args = tuple(a.detach().cpu() for a in args)
            call_args = cpu_args if method == "forward" else (cpu_args, grad_out.detach().cpu())
            try:
                ref = getattr(self._actor, method).remote(*call_args)
                self._stats.count("bytes_sent", _nbytes(call_args))
                out = ray.get(ref, timeout=self.timeout)
                self._stats.count("bytes_received", _nbytes(out))
                if method == "forward":
                    self._stats.count("remote_calls")
                return _to(out, args[0].device)
            except ray.exceptions.GetTimeoutError as exc:
                self._stats.count("timeouts")
                reason = self._failure(exc, actor_dead=False)
            except ray.exceptions.RayError as exc:
                reason = self._failure(exc, actor_dead=isinstance(exc, ray.exceptions.RayActorError))
        if self.fallback == "error":
            raise RemoteModuleError(f"remote {method} failed: {reason}")
        self._stats.count("fallbacks")
        if method == "forward":
            with torch.no_grad():
                return self.module(*args)
        gx, gp = vjp(self.module, args, grad_out)
        return gx, gp

    # ---- the actor -----------------------------------------------------------------------------
    def _weights_version(self) -> tuple:
        return tuple((id(t), t._version) for t in list(self.module.parameters()) + list(self.module.buffers()))

    def _ensure_actor(self) -> str | None:
        """None when the actor is up with the current weights, else why not."""
        if self.unavailable is not None:
            return self.unavailable
        if self._actor is None:
            if time.monotonic() < self._next_try:
                return f"waiting {self._next_try - time.monotonic():.1f} s before replacing the failed actor"
            reason = self._start_actor()
            if reason is not None:
                return reason
        version = self._weights_version()
        if version != self._synced:
            ray = _ray()
            state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
            try:
                ray.get(self._actor.load_state.remote(ray.put(state)), timeout=self.start_timeout)
            except ray.exceptions.RayError as exc:
                return self._failure(exc, actor_dead=True)
            self._stats.count("weight_syncs")
            self._stats.count("bytes_weights", _nbytes(state))
            self._synced = version
        return None

    def _start_actor(self) -> str | None:
        try:
            ray = _ray()
            cluster = connect(self.address)
        except Exception as exc:  # no Ray, or no cluster to join: permanent for this module
            self.unavailable = f"{type(exc).__name__}: {exc}"
            self._stats.error(self.unavailable)
            return self.unavailable
        missing = {k: v for k, v in self.resources.items() if cluster.get(k, 0) < v}
        if missing:
            self.unavailable = (f"no node of the Ray cluster has {missing} "
                                f"(cluster resources: { {k: v for k, v in cluster.items() if '_' not in k} })")
            self._stats.error(self.unavailable)
            return self.unavailable
        res = dict(self.resources)
        opts = {"num_cpus": res.pop("CPU", 1), "num_gpus": res.pop("GPU", 0), "resources": res or None,
                "max_concurrency": 1}
        local = copy.deepcopy(self.module).cpu()
        state_bytes = _nbytes({k: v for k, v in local.state_dict().items()})
        actor = ray.remote(ModuleWorker).options(**opts).remote(ray.put(local))
        try:
            self._actor_info = ray.get(actor.info.remote(), timeout=self.start_timeout)
        except ray.exceptions.RayError as exc:
            ray.kill(actor)
            return self._failure(exc, actor_dead=True)
        self._actor = actor
        self._synced = self._weights_version()
        self._stats.count("actor_starts")
        self._stats.count("weight_syncs")
        self._stats.count("bytes_weights", state_bytes)
        return None

    def _failure(self, exc: BaseException, actor_dead: bool) -> str:
        self._stats.count("failures")
        self._stats.error(exc)
        if actor_dead:
            self._actor = None
            self._next_try = time.monotonic() + self.retry_after_s
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    def __getstate__(self) -> dict:
        """A copy (deepcopy, pickle) gets its own actor on its first call, not this one's."""
        state = self.__dict__.copy()
        state.update(_actor=None, _actor_info={}, _synced=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        report.register(self)

    def shutdown(self) -> None:
        """Kill the actor (the local copy stays usable)."""
        if self._actor is not None:
            _ray().kill(self._actor)
            self._actor = None

    # ---- reports -----------------------------------------------------------------------------
    def get_stats(self) -> dict:
        """calls, remote_calls, failures, fallbacks, timeouts, actor_starts, weight_syncs,
        bytes_weights / bytes_sent / bytes_received / bytes_total, latency_p50_s / p95_s, the
        actor's device and node, plus the original design's cloud_calls / local_calls / cloud_ratio."""
        s = self._stats.snapshot()
        s["bytes_total"] = s["bytes_weights"] + s["bytes_sent"] + s["bytes_received"]
        s.update(cloud_calls=s["remote_calls"], local_calls=s["fallbacks"],
                 cloud_ratio=s["remote_calls"] / s["calls"] if s["calls"] else 0.0,
                 resources=dict(self.resources), remote_device=self._actor_info.get("device"),
                 remote_node=self._actor_info.get("node"), actor_alive=self._actor is not None,
                 unavailable_reason=self.unavailable)
        return s

    def backend_status(self, ping: bool = True, timeout: float = 2.0) -> dict:
        where = self._actor_info.get("node") or "not started"
        row = {"name": f"RemoteModule({type(self.module).__name__})", "kind": "ray",
               "endpoint": f"ray:{id(self):x}", "configured_by": "RemoteModule", "stats": self.get_stats()}
        if self.unavailable:
            return row | {"answered": False, "detail": self.unavailable}
        if self._actor is None:
            return row | {"answered": None, "detail": f"actor {where} (starts on the first call)"}
        if not ping:
            return row | {"answered": None, "detail": "not checked"}
        ray = _ray()
        try:
            ray.get(self._actor.info.remote(), timeout=timeout)
            return row | {"answered": True, "detail": f"actor on {where}, device {self._actor_info.get('device')}"}
        except ray.exceptions.RayError as exc:
            return row | {"answered": False, "detail": f"actor on {where}: {type(exc).__name__}"}

    def extra_repr(self) -> str:
        return f"resources={self.resources}, fallback={self.fallback!r}, timeout={self.timeout}"


def _to(out, device: torch.device):
    if isinstance(out, torch.Tensor):
        return out.to(device)
    return tuple([g.to(device) if g is not None else None for g in gs] for gs in out)


class CloudNPULinear(RemoteModule):
    """The original design's name: an ``nn.Linear(in_features, out_features)`` run on a node with
    an Ascend NPU (``resources={"NPU": 1}`` by default) through Ray, falling back locally."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 resources: dict[str, float] | None = None, fallback: str = "local", timeout: float = 30.0,
                 address: str | None = None, device=None, dtype=None, **kwargs) -> None:
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        super().__init__(nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype),
                         resources={"NPU": 1} if resources is None else resources, fallback=fallback,
                         timeout=timeout, address=address, **kwargs)

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self.module.bias
