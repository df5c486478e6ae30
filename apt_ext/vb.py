"""``vb.enable()``: switch apt_ext's features on and report what is really active (SPEC 10).

    import apt_ext.vb as vb
    vb.enable(mode="balanced", verbose=True)   # models built afterwards get the features
    vb.apply(model)                            # or apply them to a given model

Modes (what ``apply`` does to a model):
    speed     no weight quantisation (full-precision Linear layers);
    balanced  FP4 (nvfp4) for Linear layers with at least 65536 weights (the large ones);
    memory    FP4 (nvfp4) for every Linear layer.
FP4 is applied only where an ``apt::fp4_linear`` kernel can run on the model's device; otherwise
the report says why it is off. APT models built after ``enable`` are passed to ``apply`` by an
init hook (``apt_ext.model.hooks``) that ``enable`` adds and ``disable`` removes; other models
need ``vb.apply(model)``. Left-spin and autopoietic attention are
APT model config fields and are reported, not changed. The report lists measured facts only
(kernels found, layers converted, weight bytes before/after); it never states a speed-up.
"""
from __future__ import annotations

import importlib.util

import torch
from torch import nn

from apt_ext.model.hooks import add_init_hook, remove_init_hook

MODES = ("speed", "balanced", "memory")
FP4_FORMAT = "nvfp4"
BALANCED_MIN_NUMEL = 65536

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
    return {
        "mode": mode,
        "device": str(device),
        "kernels": kernels,
        "fp4": {"format": FP4_FORMAT if (wants_fp4 and fp4_ok) else None,
                "reason": "" if (wants_fp4 and fp4_ok) else ("not used in this mode" if not wants_fp4 else why)},
        "vgpu": _vgpu(),
        "cloud_backends": backends_report(ping=ping),
    }


def _weight_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def apply(model: nn.Module, mode: str | None = None, verbose: bool = False) -> dict:
    """Apply ``mode`` (default: the enabled one, else "balanced") to ``model`` in place.

    Returns the status report plus ``model``: Linear layers converted to FP4 and the measured
    bytes of parameters + buffers before and after.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    mode = mode or _active["mode"] or "balanced"
    _check_mode(mode)
    report = status(mode)
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    fp4_ok, why = fp4_usable(device, report["kernels"])
    before = _weight_bytes(model)
    converted = 0
    if mode != "speed" and fp4_ok:
        import apt_ext
        from apt_ext.model import APTModel
        tied = isinstance(model, APTModel) and model.config.tie_embeddings
        min_numel = BALANCED_MIN_NUMEL if mode == "balanced" else 0

        def keep(m: nn.Module, fqn: str) -> bool:
            return m.weight.numel() >= min_numel and not (tied and fqn == "lm_head")
        converted = sum(1 for fqn, m in model.named_modules() if type(m) is nn.Linear and keep(m, fqn))
        apt_ext.quantize_(model, FP4_FORMAT, filter_fn=keep)
    report["fp4"] = {"format": FP4_FORMAT if converted else None,
                     "reason": "" if converted else ("not used in this mode" if mode == "speed" else
                                                     why or "no Linear layer large enough")}
    report["model"] = {"device": str(device), "linear_to_fp4": converted,
                       "weight_bytes_before": before, "weight_bytes_after": _weight_bytes(model)}
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "use_left_spin"):
        report["model"].update(left_spin=cfg.use_left_spin, autopoietic=cfg.use_autopoietic,
                               dbc_dac=cfg.use_dbc_dac)
    if verbose:
        print(format_report(report))
    return report


def _apply_enabled(model: nn.Module) -> dict | None:
    """The init hook vb.enable() adds (apt_ext.model.hooks): apply the enabled mode."""
    if _active["mode"] is None:
        return None
    return apply(model, _active["mode"], verbose=_active["verbose"])


def enable(mode: str = "balanced", verbose: bool = True) -> dict:
    """Turn the features of ``mode`` on for models built afterwards; returns (and prints) the report."""
    _check_mode(mode)
    _active.update(mode=mode, verbose=bool(verbose))
    add_init_hook(_apply_enabled)
    report = status(mode, ping=True)
    if verbose:
        print(format_report(report))
    return report


def enable_balanced_mode(verbose: bool = True) -> dict:
    return enable("balanced", verbose)


def disable() -> None:
    """Models built afterwards get no features from vb."""
    _active.update(mode=None, verbose=False)
    remove_init_hook(_apply_enabled)


def format_report(r: dict) -> str:
    lines = [f"apt_ext vb: mode={r['mode']}  device={r['device']}"]
    ks = ", ".join(f"{op}[{'/'.join(b) or 'none'}]" for op, b in r["kernels"].items())
    lines.append(f"  kernels usable here: {ks}")
    f = r["fp4"]
    lines.append(f"  FP4 weights: {f['format']}" if f["format"] else f"  FP4 weights: off ({f['reason']})")
    v = r["vgpu"]
    lines.append(f"  VGPU: tiers possible here {', '.join(v['tiers_possible'])} ({v['note']})" if v["available"]
                 else f"  VGPU: unavailable ({v['reason']})")
    from apt_ext.cloud.report import format_backends
    lines.extend("  " + ln for ln in format_backends(r["cloud_backends"]))
    if "model" in r:
        m = r["model"]
        lines.append(f"  model: {m['linear_to_fp4']} Linear layers -> FP4; weights "
                     f"{m['weight_bytes_before'] / 2**20:.2f} MiB -> {m['weight_bytes_after'] / 2**20:.2f} MiB (measured)")
    return "\n".join(lines)
