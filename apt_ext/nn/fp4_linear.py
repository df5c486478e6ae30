"""``FP4Linear``: nn.Linear with a frozen 4-bit weight, computed by ``torch.ops.apt.fp4_linear``."""
from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from apt_ext import _native
from apt_ext.fp4.format import DEFAULT_FORMAT, get_format
from apt_ext.fp4.tiled import (CpuTiledFP4Weight, TiledFP4Weight, cpu_tile, cpu_tiled_kernel_is_fast, sumsq_parts,
                               tile)
from apt_ext.fp4.weight import FP4Weight, quantize

# Rows of x (leading dims flattened) up to which inference on CUDA uses the tiled kernels
# (fp4_linear_tiled: the GEMV, and its GEMM where csrc/fp4/fp4_gemm_tiled_cuda.h routes it: from
# 65 rows on weights of 8192 rows or more, on Hopper also from 24 rows on weights of 16384); above
# it fp4_linear (dequantise + cuBLAS there) is faster. Measured on an H200 (fourth session,
# benchmarks/results/history/fp4_linear_NVIDIA_H200_664ea39.json, bf16 x, four shapes, every
# format): at M = 64 the tiled GEMV beats dequantise + cuBLAS on every shape and format (nvfp4
# 19.3 / 53.2 / 49.8 / 185 us against 30.1 / 93.0 / 96.0 / 330 us). nvfp4 / mxfp4 with bfloat16
# x go on to 128 rows: at 128 rows the tiled op (GEMV below 8192 weight rows, GEMM above) took
# 27.1 / 72.4 / 77.4 / 219.2 us against dequantise + cuBLAS's 34.6 / 93.8 / 98.5 / 344.4 us, at
# 256 rows it lost on all four (benchmarks/results/fp4_gemv_sweep_NVIDIA_H200_round11b.json,
# nvfp4; mxfp4 decodes through the same code and was not timed there). float32 x was not
# measured above 16 rows and keeps 16.
# On Hopper (the wgmma GEMM: an sm_90a build on a compute capability 9.0 GPU) nvfp4 / mxfp4 with
# bfloat16 x go on to TILED_MAX_ROWS_HOPPER_LARGE rows on weights with at least
# TILED_LARGE_MIN_FEATURES rows or columns: there the GEMM's 2 x 128 tile (or 2 x 64 where K is large
# and N small) beat dequantise + cuBLAS up to 384 rows on an H100
# (benchmarks/results/fp4_gemv_sweep_NVIDIA_H100_80GB_HBM3_round34b.json, nvfp4, "canonical" the
# fp4_linear op): at 256 / 384 rows 92.3 / 127.7 us against 116.0 / 128.4 on 14336 x 4096, 92.2 /
# 122.1 against 124.5 / 145.4 on 4096 x 14336, 273.8 / 413.0 against 420.8 / 497.3 on 28672 x 8192;
# at 512 rows it lost on the first two (159.4 against 153.6, 150.2 against 143.1). On 4096 x 4096
# the tiled op lost from 192 rows (48.7 against 38.8 us), so smaller weights keep 128. Weights
# with one side of 8192 or more and the other under 4096 were not measured.
# Weights of at least TILED_LARGE_MIN_FEATURES rows go on to TILED_MAX_ROWS_HOPPER_WIDE rows since
# the GEMM's bulk product (thirty-fifth session; csrc/fp4/fp4_gemm_tiled_cuda.h): at 512 rows it took
# 136.5 / 428.4 us on 14336 x 4096 / 28672 x 8192 against dequantise + cuBLAS's 152.5 / 586.0 on an
# H100 (benchmarks/results/fp4_gemv_sweep_NVIDIA_H100_80GB_HBM3_round35b.json), 133.1 / 421.5 against
# 144.9 / 557.0 on an H200 (_H200_round35.json); at 1024 rows it lost on 14336 x 4096 (245.5 against
# 225.4). 4096 x 14336 at 512 rows lost (147.0 against 143.3, H100) and keeps 384.
# Smaller weights with at least TILED_MEDIUM_MIN_FEATURES rows and columns go on to
# TILED_MAX_ROWS_HOPPER_MEDIUM rows since the GEMM's bulk 1 x 128 with whole stream-K workers
# (thirty-seventh session): on 4096 x 4096 at 192 / 256 rows it took 31.9 / 32.6 us against
# dequantise + cuBLAS's 38.9 / 41.1 on an H100
# (benchmarks/results/fp4_gemv_sweep_NVIDIA_H100_80GB_HBM3_round37c.json; above 256 not measured).
TILED_MAX_ROWS = 64
TILED_MAX_ROWS_BF16_NVFP4_MXFP4 = 128
TILED_MAX_ROWS_HOPPER_MEDIUM = 256
TILED_MAX_ROWS_HOPPER_LARGE = 384
TILED_MAX_ROWS_HOPPER_WIDE = 512
TILED_MEDIUM_MIN_FEATURES = 4096
TILED_LARGE_MIN_FEATURES = 8192
TILED_MAX_ROWS_FLOAT32 = 16
# Rows of x up to which inference on a CPU with the AVX-512 FP4 path uses the CPU tiled copy
# (fp4_linear_cpu_tiled). Measured on an Intel Xeon (AVX-512, AMX; docs/fp4.md, sixth session):
# faster than fp4_linear at every M measured, 1 to 64 (4096 x 4096, 2 threads, nvfp4 17.3
# against 24.4 ms at M = 64); above 64 rows fp4_linear's batched path stays.
CPU_TILED_MAX_ROWS = 64


# Whether this build has the CUDA kernel of apt::fp4_linear_tiled: asked once at import, a
# plain bool that torch.compile reads without tracing the dispatcher query.
_TILED_CUDA_KERNEL = _native.has_kernel("fp4_linear_tiled", "CUDA")
_WGMMA_GEMM: dict[int, bool] = {}  # CUDA device index -> whether the wgmma GEMM runs there


def wgmma_gemm_runs(device: torch.device) -> bool:
    """Whether ``fp4_linear_tiled``'s wgmma GEMM runs on CUDA ``device``: the build has sm_90a code
    and the GPU is compute capability 9.0 (csrc/fp4/fp4_gemm_tiled_cuda.cu asks the same). Cached
    per device; False while torch.compile traces a device not asked before."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    runs = _WGMMA_GEMM.get(index)
    if runs is None:
        if torch.compiler.is_compiling():
            return False
        archs = str(_native.build_info().get("cuda_archs", ""))
        runs = _WGMMA_GEMM[index] = "90a" in archs and torch.cuda.get_device_capability(index) == (9, 0)
    return runs


def check_sumsq(x: torch.Tensor, sumsq: torch.Tensor | None, name: str) -> None:
    """Raises ValueError (naming ``name``) unless ``sumsq`` is None or float32 [..., P], P >= 1,
    with x's leading dimensions and device: sums of squares of x's rows in parts."""
    if sumsq is None:
        return
    if (not isinstance(sumsq, torch.Tensor) or sumsq.dtype != torch.float32 or sumsq.dim() != x.dim()
            or sumsq.shape[:-1] != x.shape[:-1] or sumsq.shape[-1] < 1 or sumsq.device != x.device):
        got = (f"{tuple(sumsq.shape)} {sumsq.dtype} on {sumsq.device}" if isinstance(sumsq, torch.Tensor)
               else type(sumsq).__name__)
        raise ValueError(f"{name}: expected float32 {(*x.shape[:-1], 'P')} with P >= 1 on x's device {x.device}, "
                         f"got {got}")


class FP4Linear(nn.Module):
    """y = x @ W.T + b with W stored in FP4 (``fmt`` nvfp4, mxfp4 or nf4).

    Same constructor as ``nn.Linear`` plus ``fmt``. The weight is initialised like nn.Linear
    (Kaiming-uniform) and quantised; ``from_linear`` quantises an existing layer. The packed
    weight, its scales and tensor scale are buffers (saved by ``state_dict`` and safetensors);
    the bias, if any, is a trainable Parameter. The 4-bit weight itself is frozen; gradients
    flow to x and bias. Input x: [..., in_features] float32/bfloat16/float16; output has x's
    dtype.

    On CUDA, calls that need no gradient with at most ``TILED_MAX_ROWS`` rows of x
    (``TILED_MAX_ROWS_BF16_NVFP4_MXFP4`` for nvfp4 / mxfp4 with bfloat16 x, on Hopper
    ``TILED_MAX_ROWS_HOPPER_WIDE`` for those on weights with ``TILED_LARGE_MIN_FEATURES`` rows,
    ``TILED_MAX_ROWS_HOPPER_LARGE`` on weights with that many columns,
    ``TILED_MAX_ROWS_HOPPER_MEDIUM`` on other weights with ``TILED_MEDIUM_MIN_FEATURES`` rows and
    columns; ``TILED_MAX_ROWS_FLOAT32`` for float32 x) run on a tiled copy of the weight
    (``apt_ext.fp4.tiled``), built at the first such call and kept beside the buffers (not
    saved; rebuilt after ``.to()`` or ``load_state_dict``; not made while ``apt_ext.vgpu.offload``
    pages the layer's weights, whose device budget it would break).

    On a CPU whose FP4 path is AVX-512, such calls with at most ``CPU_TILED_MAX_ROWS`` rows run
    on the CPU tiled copy (``apt_ext.fp4.tiled.cpu_tile``), built and kept the same way. Either
    copy takes about as much memory again as the weight; set ``tiled = False`` (CUDA) or
    ``cpu_tiled = False`` (CPU) on a layer, or on the class, to keep only the canonical tensors
    (then every call runs ``fp4_linear``). The other way round, ``release_canonical()`` keeps
    only the tiled copy (one copy of the weight, for inference on CUDA); ``restore_canonical()``
    undoes it.
    """

    tiled: bool = True
    cpu_tiled: bool = True
    # Per-layer flags, set on the instance when they change: class defaults, so that reading them
    # does not go through nn.Module.__getattr__'s AttributeError (about 2 us a read, more with
    # cold caches, on the one thread every call starts on).
    _released: bool = False  # release_canonical()
    _apt_paged: bool = False  # set by apt_ext.vgpu.offload
    _no_private_copy: bool = False
    _warned_released: bool = False
    _ahead = None  # the apt_ext.nn.dequant_ahead handle managing this layer, if any
    _swiglu_order: bool = False  # the tiled copy in the SwiGLU order (set by the first fused swiglu call)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, fmt: str = DEFAULT_FORMAT,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if dtype is not None and dtype not in (torch.float32, torch.bfloat16, torch.float16):
            # the bias's dtype: fp4_linear takes no other
            raise TypeError(f"dtype: expected None, torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
        self.block_size = get_format(fmt).block_size
        self.in_features, self.out_features, self.fmt = in_features, out_features, fmt
        w = torch.empty(out_features, in_features, device=device, dtype=torch.float32)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        q = quantize(w, fmt)
        self._tiled: TiledFP4Weight | None = None
        self._cpu_tiled: CpuTiledFP4Weight | None = None
        self.register_buffer("packed", q.packed)
        self.register_buffer("scales", q.scales)
        self.register_buffer("tensor_scale", q.tensor_scale)
        if bias:
            bound = 1 / math.sqrt(in_features)
            self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype or torch.float32)
                                     .uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str = DEFAULT_FORMAT) -> "FP4Linear":
        """Quantise an ``nn.Linear`` (its weight must be finite) into a new FP4Linear."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        block_size = get_format(fmt).block_size
        mod = cls.__new__(cls)
        nn.Module.__init__(mod)
        mod.in_features, mod.out_features, mod.fmt = linear.in_features, linear.out_features, fmt
        mod.block_size = block_size
        q = quantize(linear.weight.detach(), fmt)
        mod._tiled = None
        mod._cpu_tiled = None
        mod.register_buffer("packed", q.packed)
        mod.register_buffer("scales", q.scales)
        mod.register_buffer("tensor_scale", q.tensor_scale)
        if linear.bias is not None:
            mod.bias = nn.Parameter(linear.bias.detach().clone())
        else:
            mod.register_parameter("bias", None)
        return mod

    @property
    def weight(self) -> FP4Weight:
        """The quantised weight as an FP4Weight (shares storage with the buffers; rebuilt from the
        tiled copy after ``release_canonical()``)."""
        if self.canonical_released:
            return self._tiled.to_weight()
        return FP4Weight(self.packed, self.scales, self.tensor_scale, self.fmt, self.block_size,
                         (self.out_features, self.in_features))

    @property
    def canonical_released(self) -> bool:
        """Whether ``release_canonical()`` dropped the packed codes and scales (the tiled copy holds them)."""
        return self._released

    def release_canonical(self) -> None:
        """Keep only the tiled copy of the weight: the packed codes and scales buffers become empty,
        so the layer holds one 4-bit copy (0.28x of bf16 for nvfp4) instead of two (CUDA inference
        runs the tiled kernels on the copy anyway). The canonical tensors are rebuilt from the copy
        (``TiledFP4Weight.to_weight()``: bit for bit for weights as ``quantize`` makes them) for
        ``state_dict``, ``.to()``, ``load_state_dict`` (which restore them first), and for calls the
        tiled kernel does not take (more rows than its limit, gradients, the CPU): those rebuild them
        on every call, slowly, and warn once. Builds the copy if needed; ValueError when the weight
        has none (see ``apt_ext.fp4.tiled.tile``), ``tiled`` is False, or the layer is paged by
        ``apt_ext.vgpu.offload``."""
        if self.canonical_released:
            return
        if self._apt_paged:
            raise ValueError("release_canonical: this layer's weights are paged by apt_ext.vgpu.offload; "
                             "restore() that handle first")
        if not self.tiled:
            raise ValueError("release_canonical: tiled is False on this layer, so it keeps no tiled copy")
        copy = self.tiled_weight()
        self.packed = self.packed.new_empty(0)
        self.scales = self.scales.new_empty(0)
        self._tiled, self._released = copy, True

    def restore_canonical(self) -> None:
        """Undo ``release_canonical()``: the packed codes and scales buffers again (rebuilt from the
        tiled copy, on its device), the copy kept. No-op when nothing was released."""
        if not self.canonical_released:
            return
        w = self._tiled.to_weight()
        self.packed, self.scales, self._released = w.packed, w.scales, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_x(x)
        ahead = self._ahead
        if ahead is not None and ahead.takes(self, x):
            return ahead.linear(self, x)
        copy = None
        if self._takes_tiled_path(x):
            copy = self._private_copy(self.tiled_weight)
        elif self._takes_cpu_tiled_path(x):
            copy = self._private_copy(self.cpu_tiled_weight)
        if copy is not None:
            return copy.linear(x, self.bias)
        if self.canonical_released:
            if not self._warned_released:
                warnings.warn("FP4Linear: this call does not run on the tiled copy and the canonical tensors "
                              "were released (release_canonical): they are rebuilt for every such call, "
                              "which is slow; restore_canonical() keeps them", RuntimeWarning)
                self._warned_released = True
            w = self.weight
            return torch.ops.apt.fp4_linear.default(x, w.packed, w.scales, w.tensor_scale, self.bias, self.fmt,
                                                    self.block_size)
        # .default: the overload itself, skipping the packet's overload resolution; the buffers
        # and the bias read from their dicts, not through nn.Module.__getattr__ (Python time every
        # call pays on one thread, before the op's threads start)
        buffers = self._buffers
        return torch.ops.apt.fp4_linear.default(x, buffers["packed"], buffers["scales"], buffers["tensor_scale"],
                                                self._parameters["bias"], self.fmt, self.block_size)

    def _takes_tiled_path(self, x: torch.Tensor) -> bool:
        # checks ordered so that the common "no" (x on the CPU) costs two attribute reads: every
        # call pays this Python on one thread, with cold caches in a real model
        if not self.tiled:  # switched off: the copy, if one was built, is let go
            if getattr(self, "_tiled", None) is not None:
                self.restore_canonical()  # the copy may be the only one
                self._tiled = None
            return False
        if not x.is_cuda:
            return False
        if x.dtype == torch.float32:
            max_rows = TILED_MAX_ROWS_FLOAT32
        elif x.dtype == torch.bfloat16 and self.fmt in ("nvfp4", "mxfp4"):
            max_rows = TILED_MAX_ROWS_BF16_NVFP4_MXFP4
            # a weight under TILED_MEDIUM_MIN_FEATURES on both sides skips the device query
            if (max(self.in_features, self.out_features) >= TILED_MEDIUM_MIN_FEATURES
                    and x.numel() > max_rows * self.in_features and wgmma_gemm_runs(x.device)):
                if self.out_features >= TILED_LARGE_MIN_FEATURES:
                    max_rows = TILED_MAX_ROWS_HOPPER_WIDE
                elif self.in_features >= TILED_LARGE_MIN_FEATURES:
                    max_rows = TILED_MAX_ROWS_HOPPER_LARGE
                elif min(self.in_features, self.out_features) >= TILED_MEDIUM_MIN_FEATURES:
                    max_rows = TILED_MAX_ROWS_HOPPER_MEDIUM
        else:
            max_rows = TILED_MAX_ROWS
        if not self.packed.is_cuda or x.numel() > max_rows * self.in_features:
            return False
        if self._apt_paged:  # weights paged by apt_ext.vgpu.offload: no private copy
            self._tiled = None  # (never the only copy: offload refuses a released layer)
            return False
        if not _TILED_CUDA_KERNEL:
            return False
        needs_grad = x.requires_grad or (self.bias is not None and self.bias.requires_grad)
        if torch.is_grad_enabled() and needs_grad:
            return False
        # torch.compile traces the tiled path only when an eager call already built the copy
        # (building it reads mxfp4's exponent range back to the host).
        return not torch.compiler.is_compiling() or getattr(self, "_tiled", None) is not None

    def _private_copy(self, build: Callable[[], TiledFP4Weight | CpuTiledFP4Weight]):
        """``build()`` (cached by it), or None when the weight's scales do not fit the tiled layout
        (a NaN or negative nvfp4 scale, mxfp4 exponents spanning too many binades): then this
        layer warns once and keeps using fp4_linear, which computes such weights as they are."""
        if self._no_private_copy:
            return None
        try:
            return build()
        except ValueError as e:
            warnings.warn(f"FP4Linear: no tiled copy of this weight ({e}); using fp4_linear", RuntimeWarning)
            self._no_private_copy = True
            return None

    def _takes_cpu_tiled_path(self, x: torch.Tensor) -> bool:
        if not self.cpu_tiled:  # switched off: the copy, if one was built, is let go
            if getattr(self, "_cpu_tiled", None) is not None:
                self._cpu_tiled = None
            return False
        if not x.is_cpu:
            return False
        compiling = torch.compiler.is_compiling()
        # where the copy's kernel is not the fast one (every path but AVX-512) the answer is "no"
        # whatever the rows: asked before the rest (one native call), as above
        if not compiling and not cpu_tiled_kernel_is_fast():
            return False
        if not self._buffers["packed"].is_cpu:
            return False
        if self._apt_paged:  # weights paged by apt_ext.vgpu.offload: no private copy
            self._cpu_tiled = None
            return False
        max_rows = CPU_TILED_MAX_ROWS
        if x.dtype == torch.bfloat16 and not compiling:
            # from this many rows fp4_linear multiplies bf16 x by bf16-decoded weight slabs with
            # torch's bf16 GEMM (AMX / AVX512-BF16 CPUs), faster than the tiled GEMV
            gemm_rows = _native._C.fp4.bf16_gemm_min_rows()
            max_rows = min(max_rows, gemm_rows - 1) if gemm_rows else max_rows
        if x.numel() > max_rows * self.in_features:
            return False
        needs_grad = x.requires_grad or (self.bias is not None and self.bias.requires_grad)
        if torch.is_grad_enabled() and needs_grad:
            return False
        if compiling:  # traced only when an eager call already built the copy
            return getattr(self, "_cpu_tiled", None) is not None
        return True

    def cpu_tiled_weight(self) -> CpuTiledFP4Weight:
        """The CPU tiled copy of the weight (the buffers must be on the CPU; built once, then cached)."""
        if getattr(self, "_cpu_tiled", None) is None:
            self._cpu_tiled = cpu_tile(self.weight)
        return self._cpu_tiled

    def tiled_weight(self) -> TiledFP4Weight:
        """The tiled copy of the weight on the buffers' device (built once, then cached; in the SwiGLU
        order once ``swiglu`` has run fused: ``apt_ext.fp4.tiled.tile``)."""
        copy = getattr(self, "_tiled", None)
        if copy is None or copy.tiles.device != self.packed.device or copy.swiglu != self._swiglu_order:
            self._tiled = tile(self.weight, swiglu=self._swiglu_order)  # (weight: from the old copy if released)
        return self._tiled

    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[-1] != self.in_features:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected [..., {self.in_features}] (in_features), got {got}")

    @staticmethod
    def _check_rms_eps(rms_eps: float | None) -> None:
        if rms_eps is not None and (not isinstance(rms_eps, (int, float)) or isinstance(rms_eps, bool)
                                    or not math.isfinite(rms_eps) or rms_eps < 0):
            raise ValueError(f"rms_eps: expected None or a finite float >= 0, got {rms_eps!r}")

    @staticmethod
    def _check_rms_sumsq(x: torch.Tensor, rms_eps: float | None, rms_sumsq: torch.Tensor | None) -> None:
        if rms_sumsq is not None and rms_eps is None:
            raise ValueError("rms_sumsq: taken only with rms_eps (the norm it feeds)")
        check_sumsq(x, rms_sumsq, "rms_sumsq")

    def _rms_normalized(self, x: torch.Tensor, rms_eps: float | None,
                        rms_sumsq: torch.Tensor | None = None) -> torch.Tensor:
        """x RMS-normalised over its last dimension (no weight) when ``rms_eps`` is given (with
        ``rms_sumsq``: ``x * rsqrt(rms_sumsq.sum(-1) / in_features + rms_eps)`` in float32); else x."""
        if rms_eps is None:
            return x
        if rms_sumsq is None:
            return F.rms_norm(x, (self.in_features,), eps=float(rms_eps))
        mean = rms_sumsq.sum(-1, keepdim=True) / self.in_features
        return (x.float() * torch.rsqrt(mean + float(rms_eps))).to(x.dtype)

    def fused(self, x: torch.Tensor, *, rms_eps: float | None = None, residual: torch.Tensor | None = None,
              rms_sumsq: torch.Tensor | None = None,
              return_sumsq: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``self(rms_norm(x)) + residual`` [..., out_features] in x's dtype. ``rms_eps``: x is first
        RMS-normalised over in_features, ``x * rsqrt(mean(x**2, -1) + rms_eps)``, with no weight (an
        RMSNorm whose weight ``apt_ext.nn.fold_rms_norm_`` folded into this layer); None skips it.
        ``rms_sumsq`` (with ``rms_eps``): float32 [..., P], each row of x's sum of squares split in
        parts (its sum over the last dimension), as ``return_sumsq`` gives them: the norm uses it
        instead of a pass over x. ``residual``: None or [..., out_features] of x's dtype, added last.
        ``return_sumsq``: returns (y, sums), the sums of squares of y (as returned) in parts
        (float32 [..., ceil(out_features / 16)], ``apt_ext.fp4.tiled.sumsq_parts``) for the next
        norm's ``rms_sumsq``. Calls that take the tiled path (see the class) run one kernel: the
        GEMV sums x's squares itself (in float32, x not rounded after normalising) or adds the given
        parts, adds the residual and takes y's sums as it stores; others run the composite
        (``F.rms_norm``, this layer, the addition, ``sumsq_parts``)."""
        self._check_x(x)
        self._check_rms_eps(rms_eps)
        self._check_rms_sumsq(x, rms_eps, rms_sumsq)
        if not isinstance(return_sumsq, bool):
            raise TypeError(f"return_sumsq: expected a bool, got {type(return_sumsq).__name__}")
        if residual is not None:
            want = (*x.shape[:-1], self.out_features)
            if not isinstance(residual, torch.Tensor) or tuple(residual.shape) != want or residual.dtype != x.dtype:
                got = (f"{tuple(residual.shape)} {residual.dtype}" if isinstance(residual, torch.Tensor)
                       else type(residual).__name__)
                raise ValueError(f"residual: expected {want} of x's dtype {x.dtype}, got {got}")
        takes_fused = (self._ahead is None and self._takes_tiled_path(x)
                       and not (residual is not None and residual.requires_grad and torch.is_grad_enabled()))
        if takes_fused:
            copy = self._private_copy(self.tiled_weight)
            if copy is not None:
                return copy.linear(x, self.bias, rms_eps=rms_eps, residual=residual, rms_sumsq=rms_sumsq,
                                   return_sumsq=return_sumsq)
        y = self(self._rms_normalized(x, rms_eps, rms_sumsq))
        y = y if residual is None else residual + y
        return (y, sumsq_parts(y)) if return_sumsq else y

    def swiglu(self, x: torch.Tensor, rms_eps: float | None = None,
               rms_sumsq: torch.Tensor | None = None) -> torch.Tensor:
        """silu(gate) * up [..., out_features / 2] (x's dtype) for a layer whose output is [gate; up]
        (the fused gate and up projections of a SwiGLU MLP, as Llama's): ``F.silu(g) * u`` of
        ``g, u = self(x).chunk(2, -1)``; ``rms_eps``, ``rms_sumsq``: x RMS-normalised first, as in
        ``fused``. Calls that take the tiled path (see the class) with out_features a multiple of
        16 run one fused kernel (``fp4_linear_tiled_swiglu``), which needs the tiled copy in the
        SwiGLU order: the first such call rebuilds the copy that way (later ``forward`` calls gather
        their output back from it); above 8 rows of 16-bit x its norm runs ahead of it (``F.rms_norm``),
        faster there. Others run the composite."""
        self._check_x(x)
        if self.out_features % 2 != 0:
            raise ValueError(f"swiglu: out_features must be even ([gate; up]), got {self.out_features}")
        self._check_rms_eps(rms_eps)
        self._check_rms_sumsq(x, rms_eps, rms_sumsq)
        fused = (self.out_features % 16 == 0 and self._ahead is None and self._takes_tiled_path(x)
                 and (self._swiglu_order or not torch.compiler.is_compiling()))
        if fused:
            self._swiglu_order = True
            copy = self._private_copy(self.tiled_weight)
            if copy is not None:
                return copy.swiglu_linear(x, self.bias, rms_eps=rms_eps, rms_sumsq=rms_sumsq)
        gate, up = self(self._rms_normalized(x, rms_eps, rms_sumsq)).chunk(2, -1)
        return F.silu(gate) * up

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) / .half() would cast the float8 / float32 scales (and the
        # float32 tensor scale), breaking the format. The quantised weight may change device,
        # never dtype; the bias follows the module like any parameter.
        self.restore_canonical()  # before the copy goes: it may hold the only one
        self._tiled = self._cpu_tiled = None
        self._no_private_copy = False
        frozen = {name: self._buffers.pop(name) for name in ("packed", "scales", "tensor_scale")}
        try:
            super()._apply(fn, recurse)
        finally:
            for name, t in frozen.items():
                moved = fn(t)
                self._buffers[name] = moved if moved.dtype == t.dtype else t.to(device=moved.device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # load_state_dict would silently cast e.g. nf4's float32 scales into nvfp4's float8
        # buffer; a format mismatch must fail instead, and leave this layer untouched (no bias
        # loaded next to weights of another format).
        self.restore_canonical()  # the buffers take the checkpoint's shapes again
        mismatch = False
        for name in ("packed", "scales", "tensor_scale"):
            t = state_dict.get(prefix + name)
            mine = getattr(self, name)
            if t is not None and t.dtype != mine.dtype:
                mismatch = True
                error_msgs.append(f"{prefix}{name}: checkpoint has dtype {t.dtype} but this FP4Linear "
                                  f"(fmt={self.fmt!r}) stores {mine.dtype}; quantise the model with the "
                                  f"same fmt before loading")
        if mismatch:
            return
        self._tiled = self._cpu_tiled = None
        self._no_private_copy = False
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.canonical_released:  # the interchange tensors, rebuilt from the tiled copy
            w = self._tiled.to_weight()
            destination[prefix + "packed"], destination[prefix + "scales"] = w.packed, w.scales

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, fmt={self.fmt}")


FusedFP4Linear = FP4Linear


def swiglu(gate_up: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up [..., F] of a projection ``gate_up`` whose output is [gate; up] [..., 2F] (a
    SwiGLU MLP's fused gate and up, as Llama's): ``FP4Linear.swiglu`` (one fused kernel where it
    can) for an FP4Linear, ``F.silu(g) * u`` of ``gate_up(x).chunk(2, -1)`` for any other module."""
    if isinstance(gate_up, FP4Linear):
        return gate_up.swiglu(x)
    if not isinstance(gate_up, nn.Module):
        raise TypeError(f"gate_up: expected an nn.Module, got {type(gate_up).__name__}")
    y = gate_up(x)
    if not isinstance(y, torch.Tensor) or y.dim() == 0 or y.shape[-1] % 2 != 0:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"gate_up: expected an output [..., 2F] ([gate; up], an even last dimension), got {got}")
    gate, up = y.chunk(2, -1)
    return F.silu(gate) * up


def quantize_(model: nn.Module, fmt: str = DEFAULT_FORMAT,
              filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by ``FP4Linear.from_linear``.

    ``filter_fn(module, fqn)`` -> bool selects which layers to quantise (default: all).
    Returns ``model``. To load a saved quantised model, build the float model, call
    ``quantize_`` with the same fmt and filter, then ``load_state_dict``.

    Calling it again is safe: FP4Linear layers already in ``fmt`` are left as they are. An
    FP4Linear layer of another format that ``filter_fn`` selects raises ValueError: its float
    weights are gone, and re-quantising 4-bit values would stack two rounding errors; quantise
    a float copy of the model instead (several formats in one model: one call per format, each
    with a filter_fn that selects that format's layers).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    get_format(fmt)
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn: expected a callable (module, fqn) -> bool, got {type(filter_fn).__name__}")
    other = [(fqn, m.fmt) for fqn, m in model.named_modules()
             if isinstance(m, FP4Linear) and m.fmt != fmt and (filter_fn is None or filter_fn(m, fqn))]
    if other:
        fqn, was = other[0]
        raise ValueError(f"model: {len(other)} layer(s) are already FP4Linear in another format (e.g. "
                         f"{fqn or 'the model'!r}: {was}); quantize_ to {fmt!r} needs their float weights, which "
                         f"are gone: quantise a float copy of the model instead")
    targets = [(fqn, m) for fqn, m in model.named_modules()
               if type(m) is nn.Linear and (filter_fn is None or filter_fn(m, fqn))]
    if any(fqn == "" for fqn, _ in targets):
        raise ValueError("model: is itself an nn.Linear; use FP4Linear.from_linear(model) instead")
    # every layer quantised before any is swapped: a weight quantize refuses leaves the model as it was
    replacements = []
    for fqn, lin in targets:
        try:
            replacements.append((fqn, FP4Linear.from_linear(lin, fmt)))
        except (TypeError, ValueError) as e:
            raise type(e)(f"model: layer {fqn!r} cannot be quantised (the model is left unchanged): {e}") from e
    for fqn, new in replacements:
        parent_name, _, child = fqn.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return model
