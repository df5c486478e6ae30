"""``vb``: switch apt_ext's features on for models and report what is really active (docs/contract.md §10).

    import apt_ext.vb as vb
    vb.apply(model)                        # this model: FP4 for inference, trainable while it trains
    vb.apply(model, for_training=False)    # quantise now, for inference only
    vb.enable("balanced")                  # every APTModel built or loaded afterwards gets apply()
    vb.report(model)                       # what vb did to that model

Modes (which Linear layers become FP4):
    speed     none (full-precision Linear layers);
    balanced  nvfp4 for Linear layers with at least 65536 weights (the large ones);
    memory    nvfp4 for every Linear layer.
The tied output head of an APT model stays float. FP4 is used only where an ``apt::fp4_linear``
kernel runs on the model's device; otherwise the report says why it is off.

When FP4 is applied. FP4 weights are frozen 4-bit tensors, so vb never quantises a model that
trains:
- ``for_training=False``: now, for good (like ``apt_ext.quantize_``).
- ``for_training=True``: never; the report says the weights stay trainable.
- ``for_training=None`` (the default, and what ``enable`` does for every later APTModel): now if
  the model is in eval mode or autograd is off, else at the model's first forward that runs in
  eval mode or without grad (``torch.no_grad``/``inference_mode``, ``model.generate``, serving).
  A model whose first forward trains (train mode, grad on) keeps its float weights for good; call
  ``vb.apply(model, for_training=False)`` after training to quantise it. A model quantised this
  way that later runs a training forward gets its float Linear layers back first, as the same
  Parameter objects (an optimizer built earlier keeps working): in "balanced" mode the exact
  float weights, kept in host memory while the model ran in FP4; in "memory" mode the float copy
  was dropped to save memory, so the weights come back dequantised from FP4 (with a warning).

``vb.enable`` works through an init hook (``apt_ext.model.hooks``) that it adds and ``disable``
removes, so only APT models reach it by themselves; any other module needs ``vb.apply``. Loading a
checkpoint (``APTModel.from_pretrained``) works in every vb state: the hook never changes the
model's tensors at construction. Left-spin, autopoietic attention and DBC-DAC are APT config
fields: reported, not changed. The report lists measured facts only (kernels found, layers
converted, weight bytes before/after, trainable parameters, cloud backends); it never states a
speed-up.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from apt_ext.model.hooks import add_init_hook, remove_init_hook

MODES = ("speed", "balanced", "memory")
FP4_FORMAT = "nvfp4"
BALANCED_MIN_NUMEL = 65536
WHEN = ("for inference only (eval or no-grad forward, generate, serving); a model that trains keeps "
        "trainable float weights")

_active: dict = {"mode": None, "verbose": False}


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")


def _kernels() -> dict:
    import apt_ext
    caps = apt_ext.capabilities()
    return {op: [b for b in ("cuda", "triton", "cpu") if e[b]["usable"]] for op, e in caps["ops"].items()}


def fp4_usable(device: torch.device, kernels: dict | None = None) -> tuple[bool, str]:
    """(usable, reason): whether an ``apt::fp4_linear`` kernel can run on ``device``."""
    have = (kernels if kernels is not None else _kernels()).get("fp4_linear", [])
    if device.type == "cpu":
        ok = "cpu" in have
    elif device.type == "cuda":
        ok = "cuda" in have or "triton" in have
    else:
        ok = False
    return ok, ("" if ok else f"no usable apt::fp4_linear kernel for device {device.type}")


def _vgpu() -> dict:
    if importlib.util.find_spec("apt_ext.vgpu") is None:
        return {"available": False, "reason": "apt_ext.vgpu is not part of this build"}
    tiers = (["cuda"] if torch.cuda.is_available() else []) + ["cpu (pinned host)", "ssd"]
    return {"available": True, "tiers_possible": tiers,
            "note": "offload is explicit: apt_ext.vgpu.offload(model, VGPUStack.from_config(...))"}


def status(mode: str | None = None, ping: bool = False) -> dict:
    """What is active on this machine for ``mode`` (default: the enabled one). ``ping``: ask
    each configured cloud backend whether it answers (apt_ext.cloud.report)."""
    from apt_ext.cloud.report import backends_report
    from apt_ext.devices import get_device
    mode = mode or _active["mode"]
    kernels = _kernels()
    device = get_device()
    fp4_ok, why = fp4_usable(device, kernels)
    wants_fp4 = mode in ("balanced", "memory")
    on = wants_fp4 and fp4_ok
    return {
        "mode": mode,
        "device": str(device),
        "kernels": kernels,
        "fp4": {"format": FP4_FORMAT if on else None, "when": WHEN if on else None,
                "reason": "" if on else ("not used in this mode" if not wants_fp4 else why)},
        "vgpu": _vgpu(),
        "cloud_backends": backends_report(ping=ping),
    }


# ---- one model ---------------------------------------------------------------------------
def _weight_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _device_of(model: nn.Module) -> torch.device:
    t = next(iter(model.parameters()), None)
    if t is None:
        t = next(iter(model.buffers()), None)
    return t.device if t is not None else torch.device("cpu")


def _targets(model: nn.Module, mode: str) -> dict[str, nn.Linear]:
    """fqn -> nn.Linear that ``mode`` quantises (the tied output head of an APT model stays)."""
    from apt_ext.model import APTModel
    tied = isinstance(model, APTModel) and model.config.tie_embeddings
    min_numel = BALANCED_MIN_NUMEL if mode == "balanced" else 0
    return {fqn: m for fqn, m in model.named_modules()
            if type(m) is nn.Linear and fqn and m.weight.numel() >= min_numel and not (tied and fqn == "lm_head")}


def _set(model: nn.Module, fqn: str, module: nn.Module) -> None:
    parent, _, child = fqn.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@dataclass
class _ModelState:
    """What vb did to one model, kept as ``model._apt_vb``; ``_pre_forward_hook`` consults it.

    ``fp4``: "pending" (decided at the first forward), "applied" (for inference, reversible:
    a training forward restores the float layers), "quantized" (``for_training=False``: for
    good), "kept_trainable" or "off" (no kernel / nothing to convert / speed mode)."""
    mode: str
    verbose: bool
    keep_float: bool                       # keep an exact float copy (host memory) while in FP4
    fp4: str = "pending"
    reason: str = ""
    linear_to_fp4: int = 0
    restored: int = 0
    warned_frozen: bool = False
    dropped_float: bool = False            # for_training=False dropped the float copies
    replaced: dict[str, nn.Linear] = field(default_factory=dict)   # fqn -> the float layer it replaced

    def pre_forward(self, model: nn.Module) -> None:
        if self.fp4 in ("kept_trainable", "off"):
            return
        trains = model.training and torch.is_grad_enabled()
        if self.fp4 == "quantized":
            if trains and not self.warned_frozen:
                self.warned_frozen = True
                warnings.warn(f"vb: {type(model).__name__} runs a training forward but its {self.linear_to_fp4} FP4 "
                              "layers are frozen (vb.apply(model, for_training=False)); vb.apply(model, "
                              "for_training=True) makes them trainable again", RuntimeWarning, stacklevel=4)
        elif trains and self.fp4 == "applied":
            self.restore(model, "it trains after running in FP4")
        elif trains:
            self.fp4, self.reason = "kept_trainable", ("its first forward trained (train mode, grad on); vb.apply(model, "
                                                       "for_training=False) quantises it for inference")
            self._say(model)
        elif self.fp4 == "pending":
            self.quantize(model, permanent=False)

    def quantize(self, model: nn.Module, permanent: bool) -> None:
        """Replace the mode's Linear layers by FP4Linear (bias Parameters shared with the float layer)."""
        import apt_ext
        ok, why = fp4_usable(_device_of(model))
        targets = _targets(model, self.mode) if ok and self.mode != "speed" else {}
        if not targets:
            self.fp4, self.reason = "off", ("not used in this mode" if self.mode == "speed" else why or
                                            "no Linear layer large enough")
            self._say(model)
            return
        apt_ext.quantize_(model, FP4_FORMAT, filter_fn=lambda m, fqn: fqn in targets)
        keep = self.keep_float and not permanent
        self.dropped_float = permanent
        for fqn, lin in targets.items():
            new = model.get_submodule(fqn)
            if lin.bias is not None:
                new.bias = lin.bias            # the same Parameter: an optimizer holding it keeps it
            lin.weight.data = (lin.weight.data.to("cpu") if keep else      # exact copy in host memory
                               torch.empty(0, dtype=lin.weight.dtype, device=lin.weight.device))
            self.replaced[fqn] = lin
        self.fp4 = "quantized" if permanent else "applied"
        self.linear_to_fp4 = len(targets)
        self.reason = (f"{len(targets)} Linear layers -> {FP4_FORMAT} for inference"
                       + (" (for_training=False)" if permanent else
                          "; a training forward restores them" + (" exactly" if keep else " from FP4")))
        self._say(model)

    def freeze(self, model: nn.Module) -> None:
        """``for_training=False`` on a model already in FP4: drop the float copies."""
        for lin in self.replaced.values():
            lin.weight.data = torch.empty(0, dtype=lin.weight.dtype, device=lin.weight.device)
        self.dropped_float = True
        self.fp4, self.reason = "quantized", f"{self.linear_to_fp4} Linear layers in {FP4_FORMAT} (for_training=False)"
        self._say(model)

    def restore(self, model: nn.Module, why: str) -> None:
        """Put the float Linear layers back (the same Parameter objects)."""
        lossy = False
        for fqn, lin in self.replaced.items():
            new = model.get_submodule(fqn)
            device = new.packed.device
            if lin.weight.numel() == 0:
                lossy = True
                lin.weight.data = new.weight.dequantize(lin.weight.dtype).to(device)
            else:
                lin.weight.data = lin.weight.data.to(device)
            _set(model, fqn, lin)
        self.restored, self.replaced, self.linear_to_fp4 = len(self.replaced), {}, 0
        self.fp4 = "kept_trainable"
        self.reason = (f"{why}: {self.restored} Linear layers are float and trainable again"
                       + (" (dequantised from FP4: no float copy was kept)" if lossy else " (exact float weights)"))
        if lossy:
            cause = "for_training=False dropped the float copy" if self.dropped_float else \
                f"mode {self.mode!r} keeps no float copy; 'balanced' keeps exact float weights"
            warnings.warn(f"vb: {type(model).__name__}: {why}; its Linear weights come back dequantised from "
                          f"FP4 ({cause}). vb.apply(model, for_training=True) before any inference avoids FP4.",
                          RuntimeWarning, stacklevel=4)
        self._say(model)

    def as_dict(self, model: nn.Module) -> dict:
        return {"mode": self.mode, "fp4": self.fp4, "reason": self.reason, "linear_to_fp4": self.linear_to_fp4,
                "restored_to_float": self.restored, "trainable_parameters": _trainable(model)}

    def _say(self, model: nn.Module) -> None:
        if self.verbose:
            print(f"apt_ext vb: {type(model).__name__}: FP4 {self.fp4}: {self.reason}; "
                  f"{_trainable(model):,} trainable parameters")


def _pre_forward_hook(model: nn.Module, args: tuple) -> None:
    """The forward pre-hook vb puts on a model it reaches (a plain function: models still pickle)."""
    model._apt_vb.pre_forward(model)


def report(model: nn.Module) -> dict | None:
    """What vb did to ``model`` (None if vb never reached it): mode, fp4 ("pending", "applied",
    "quantized", "kept_trainable", "off"), reason, linear_to_fp4, restored_to_float,
    trainable_parameters."""
    st = getattr(model, "_apt_vb", None)
    return st.as_dict(model) if isinstance(st, _ModelState) else None


def apply(model: nn.Module, mode: str | None = None, verbose: bool = False,
          for_training: bool | None = None) -> dict:
    """Apply ``mode`` (default: the enabled one, else "balanced") to ``model`` in place.

    ``for_training``: False quantises now, for inference, for good; True keeps (or makes again)
    the weights trainable float; None decides by use (see the module docstring). Returns the
    status report plus ``model``: device, FP4 state and reason, Linear layers in FP4, measured
    bytes of parameters + buffers before and after, trainable parameters. A model vb already
    reached keeps its mode; a later call changes it only through ``for_training``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if for_training is not None and not isinstance(for_training, bool):
        raise TypeError(f"for_training: expected None, True or False, got {for_training!r}")
    mode = mode or _active["mode"] or "balanced"
    _check_mode(mode)
    report_ = status(mode)
    before = _weight_bytes(model)
    st = getattr(model, "_apt_vb", None)
    if not isinstance(st, _ModelState):
        model.register_forward_pre_hook(_pre_forward_hook)
        st = None
    if st is not None and st.fp4 in ("applied", "quantized"):
        st.verbose = False                     # the report printed below says it
        if for_training is True:
            st.restore(model, "for_training=True")
        elif for_training is False and st.fp4 == "applied":
            st.freeze(model)
    elif st is None or st.fp4 == "pending" or for_training is not None:
        st = model._apt_vb = _ModelState(mode, verbose=False, keep_float=mode != "memory")
        if for_training is True:
            st.fp4, st.reason = "kept_trainable", "for_training=True: the weights stay trainable float"
        elif for_training is False or mode == "speed" or not model.training or not torch.is_grad_enabled():
            st.quantize(model, permanent=for_training is False)
        else:
            ok, why = fp4_usable(_device_of(model), report_["kernels"])
            st.reason = ("applied at the first inference forward (eval or no-grad, generate); "
                         "a model whose first forward trains keeps trainable float weights") if ok else \
                f"{why} (checked again at the first inference forward)"
    st.verbose = bool(verbose)                 # later decisions (at a forward) print one line each
    in_fp4 = st.fp4 in ("pending", "applied", "quantized")
    report_["fp4"] = {"format": FP4_FORMAT if in_fp4 and report_["fp4"]["format"] else None,
                      "when": report_["fp4"]["when"] if in_fp4 else None, "reason": st.reason}
    report_["model"] = {"device": str(_device_of(model)), **st.as_dict(model),
                        "weight_bytes_before": before, "weight_bytes_after": _weight_bytes(model)}
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "use_left_spin"):
        report_["model"].update(left_spin=cfg.use_left_spin, autopoietic=cfg.use_autopoietic, dbc_dac=cfg.use_dbc_dac)
    if verbose:
        print(format_report(report_))
    return report_


# ---- every later APT model -------------------------------------------------------------------
def _apply_enabled(model: nn.Module) -> dict | None:
    """The init hook vb.enable() adds (apt_ext.model.hooks): attach the enabled mode; it never
    changes the model's tensors here, so loading a checkpoint into it works."""
    if _active["mode"] is None:
        return None
    return apply(model, _active["mode"], verbose=_active["verbose"])


def enable(mode: str = "balanced", verbose: bool = True) -> dict:
    """Turn the features of ``mode`` on for APT models built or loaded afterwards; returns (and
    prints) the report."""
    _check_mode(mode)
    _active.update(mode=mode, verbose=bool(verbose))
    add_init_hook(_apply_enabled)
    report_ = status(mode, ping=True)
    if verbose:
        print(format_report(report_))
    return report_


def enable_balanced_mode(verbose: bool = True) -> dict:
    """``enable("balanced", verbose)`` (the original design's name)."""
    return enable("balanced", verbose)


def disable() -> None:
    """Models built afterwards get no features from vb (models it already reached keep theirs)."""
    _active.update(mode=None, verbose=False)
    remove_init_hook(_apply_enabled)


def format_report(r: dict) -> str:
    lines = [f"apt_ext vb: mode={r['mode']}  device={r['device']}"]
    ks = ", ".join(f"{op}[{'/'.join(b) or 'none'}]" for op, b in r["kernels"].items())
    lines.append(f"  kernels usable here: {ks}")
    f = r["fp4"]
    lines.append(f"  FP4 weights: {f['format']}, {f['when']}" if f["format"] else f"  FP4 weights: off ({f['reason']})")
    v = r["vgpu"]
    lines.append(f"  VGPU: tiers possible here {', '.join(v['tiers_possible'])} ({v['note']})" if v["available"]
                 else f"  VGPU: unavailable ({v['reason']})")
    from apt_ext.cloud.report import format_backends
    lines.extend("  " + ln for ln in format_backends(r["cloud_backends"]))
    if "model" in r:
        m = r["model"]
        lines.append(f"  model: FP4 {m['fp4']} ({m['reason']}); {m['linear_to_fp4']} Linear layers in FP4; "
                     f"{m['trainable_parameters']:,} trainable parameters; weights "
                     f"{m['weight_bytes_before'] / 2**20:.2f} MiB -> {m['weight_bytes_after'] / 2**20:.2f} MiB (measured)")
    return "\n".join(lines)
