"""Does left-spin make training more stable or tolerate a larger learning rate? A sweep.

The original APT design claimed left-spin gives 20-50% lower output variance, 30-40% better
training stability, allows a larger learning rate and costs 5-10% compute. This trains the same
small decoder-only APT model on the built-in corpus (Python's docs, byte tokenizer) over a sweep
of learning rates, with and without left-spin, several seeds each, with the same budget
(steps x batch x seq_len), and records per run: final and best eval loss, divergence (a
non-finite loss, or a final eval loss above ln(256) = uniform guessing), loss spikes (steps
after warm-up whose loss exceeds 1.3x the median of the previous 20 steps) and the median
step time, and the std of the train loss over the last 20% of steps (step-to-step loss noise,
our proxy for the claimed "output variance"). Everything else (data order, init, schedule) is identical between the two arms.

    python benchmarks/left_spin_training.py --quick     # reduced CPU sweep (minutes)
    python benchmarks/left_spin_training.py             # GPU sweep (default when CUDA is present;
                                                        # 6x256, 600 steps x 32x256 tokens, 5 lrs, 3 seeds)
    python benchmarks/left_spin_training.py --size gpt2-small --lrs 3e-4 1e-3 --tag a
                                                        # GPT-2-small size (12x768, 300 steps x 8x1024
                                                        # tokens); a shard of the lrs, its own JSON

Writes benchmarks/results/left_spin_training[_quick|_gpt2-small][_TAG].json (after every run, with
"complete": false until the last) and the matching plot under benchmarks/plots/.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_common import plot_path, run_meta, save_json  # noqa: E402

from apt_ext.model import APTModelConfiguration  # noqa: E402
from apt_ext.train import TrainConfig, Trainer  # noqa: E402

SPIKE_RATIO, SPIKE_WINDOW = 1.3, 20


def count_spikes(losses: list[float], warmup: int) -> int:
    n = 0
    for t in range(max(warmup, SPIKE_WINDOW), len(losses)):
        if math.isfinite(losses[t]) and losses[t] > SPIKE_RATIO * statistics.median(losses[t - SPIKE_WINDOW:t]):
            n += 1
    return n


def one_run(lr: float, left_spin: bool, seed: int, p: dict, device: str, tmp: str) -> dict:
    mc = APTModelConfiguration(vocab_size=256, d_model=p["d_model"], num_heads=p["heads"], d_ff=4 * p["d_model"],
                               num_encoder_layers=0, num_decoder_layers=p["layers"], decoder_only=True,
                               dropout=0.0, max_seq_len=p["seq_len"], use_left_spin=left_spin,
                               use_autopoietic=False)
    tc = TrainConfig(tokenizer="byte", steps=p["steps"], batch_size=p["batch"], seq_len=p["seq_len"], lr=lr,
                     warmup_steps=p["warmup"], eval_every=p["eval_every"], eval_batches=p["eval_batches"],
                     out_dir=f"{tmp}/run", seed=seed, device=device, progress=False, plot=False)
    res = Trainer(tc, mc).run()
    evals = [v for _, v in res.evals]
    final = evals[-1] if evals else float("nan")
    diverged = res.diverged or not math.isfinite(final) or final > math.log(256)
    return {"lr": lr, "left_spin": left_spin, "seed": seed, "final_eval": final,
            "best_eval": min(evals) if evals else float("nan"), "diverged": diverged,
            "spikes": count_spikes(res.losses, p["warmup"]),
            "late_loss_std": statistics.pstdev(res.losses[-max(2, len(res.losses) // 5):]),
            "step_time_ms": 1e3 * statistics.median(res.step_times[5:] or res.step_times),
            "train_losses": res.losses, "evals": res.evals}


def summarise(runs: list[dict], lrs: list[float]) -> list[dict]:
    rows = []
    for lr in lrs:
        for ls in (False, True):
            rs = [r for r in runs if r["lr"] == lr and r["left_spin"] == ls]
            ok = [r["final_eval"] for r in rs if not r["diverged"]]
            rows.append({"lr": lr, "left_spin": ls, "runs": len(rs), "diverged": sum(r["diverged"] for r in rs),
                         "final_eval_mean": statistics.mean(ok) if ok else float("nan"),
                         "final_eval_std": statistics.stdev(ok) if len(ok) > 1 else 0.0,
                         "best_eval_mean": statistics.mean(r["best_eval"] for r in rs),
                         "spikes_total": sum(r["spikes"] for r in rs),
                         "late_loss_std_mean": statistics.mean(r["late_loss_std"] for r in rs),
                         "step_time_ms": statistics.median(r["step_time_ms"] for r in rs)})
    return rows


def plot(rows: list[dict], runs: list[dict], lrs: list[float], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for ls, color in ((False, "tab:blue"), (True, "tab:red")):
        rr = [r for r in rows if r["left_spin"] == ls]
        a.errorbar([r["lr"] for r in rr], [r["final_eval_mean"] for r in rr], yerr=[r["final_eval_std"] for r in rr],
                   marker="o", capsize=3, color=color, label=f"left-spin {'on' if ls else 'off'}")
        for r in runs:
            if r["left_spin"] == ls and r["seed"] == runs[0]["seed"] and r["lr"] == max(lrs):
                b.plot(r["train_losses"], color=color, lw=0.8, label=f"lr {r['lr']:g}, left-spin {'on' if ls else 'off'}")
            if r["left_spin"] == ls and r["seed"] == runs[0]["seed"] and r["lr"] == min(lrs):
                b.plot(r["train_losses"], color=color, lw=0.8, ls=":", label=f"lr {r['lr']:g}, left-spin {'on' if ls else 'off'}")
    a.set_xscale("log")
    a.set_xlabel("peak learning rate")
    a.set_ylabel("final eval loss (nats/byte; diverged runs excluded)")
    a.legend()
    a.grid(alpha=0.3)
    b.set_xlabel("step")
    b.set_ylabel("train loss (first seed)")
    b.set_ylim(top=6.0)
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced CPU sweep")
    ap.add_argument("--device", default=None)
    ap.add_argument("--lrs", type=float, nargs="+", default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--size", choices=("small", "gpt2-small"), default="small",
                    help="GPU model size: small = 6x256, T 256, batch 32; gpt2-small = 12x768, T 1024, batch 8")
    ap.add_argument("--tag", default="", help="suffix of the JSON and plot names (for shards of the lrs)")
    a = ap.parse_args()
    if a.tag and not a.tag.replace("-", "").replace("_", "").isalnum():
        ap.error(f"--tag: expected letters, digits, '-' or '_', got {a.tag!r}")
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() and not a.quick else "cpu"))
    if a.quick:
        p = dict(d_model=64, layers=2, heads=2, seq_len=64, batch=8, steps=a.steps or 150, warmup=15,
                 eval_every=50, eval_batches=4)
        lrs = a.lrs or [3e-4, 3e-3, 3e-2]
        torch.set_num_threads(1)
    elif a.size == "gpt2-small":
        p = dict(d_model=768, layers=12, heads=12, seq_len=1024, batch=8, steps=a.steps or 300, warmup=30,
                 eval_every=100, eval_batches=4)
        lrs = a.lrs or [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    else:
        p = dict(d_model=256, layers=6, heads=4, seq_len=256, batch=32, steps=a.steps or 600, warmup=40,
                 eval_every=100, eval_batches=8)
        lrs = a.lrs or [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    from tqdm.auto import tqdm
    name = "left_spin_training" + ("_quick" if a.quick else ("_gpt2-small" if a.size == "gpt2-small" else ""))
    name += f"_{a.tag}" if a.tag else ""
    meta = run_meta(device)
    definitions = {"diverged": "non-finite loss or final eval > ln(256)",
                   "late_loss_std": "std of the train loss over the last 20% of steps",
                   "spike": f"loss > {SPIKE_RATIO}x median of previous {SPIKE_WINDOW} steps"}
    runs = []
    jobs = [(lr, ls, s) for lr in lrs for ls in (False, True) for s in range(a.seeds)]
    with tempfile.TemporaryDirectory() as tmp:
        for lr, ls, s in tqdm(jobs, desc="left-spin sweep", unit="run"):
            runs.append(one_run(lr, ls, s, p, str(device), tmp))
            # after every run, so a sweep cut short keeps what it measured
            save_json(name, {"meta": meta, "params": p, "lrs": lrs, "seeds": a.seeds, "runs": runs,
                             "definitions": definitions, "complete": False})
    rows = summarise(runs, lrs)
    print(f"\n{'lr':>8} {'left-spin':>9} {'final eval':>15} {'best eval':>9} {'diverged':>8} {'spikes':>6} "
          f"{'late std':>8} {'step ms':>8}")
    for r in rows:
        print(f"{r['lr']:>8g} {'on' if r['left_spin'] else 'off':>9} {r['final_eval_mean']:>8.4f}±{r['final_eval_std']:.4f} "
              f"{r['best_eval_mean']:>9.4f} {r['diverged']:>5}/{r['runs']} {r['spikes_total']:>6} "
              f"{r['late_loss_std_mean']:>8.4f} {r['step_time_ms']:>8.2f}")
    print("\nratio left-spin on / off (final eval loss, late-loss std, step time):")
    for lr in lrs:
        on, off = (next(r for r in rows if r["lr"] == lr and r["left_spin"] == v) for v in (True, False))
        print(f"  lr {lr:g}: loss {on['final_eval_mean'] / off['final_eval_mean']:.3f}x, late-loss std "
              f"{on['late_loss_std_mean'] / off['late_loss_std_mean']:.3f}x, step time "
              f"{on['step_time_ms'] / off['step_time_ms']:.3f}x")
    out = save_json(name, {"meta": meta, "params": p, "lrs": lrs, "seeds": a.seeds, "summary": rows, "runs": runs,
                           "definitions": definitions, "complete": True})
    png = plot_path(name)
    plot(rows, runs, lrs, png, f"left-spin LR sweep: {p['layers']}x{p['d_model']}, {p['steps']} steps x "
         f"{p['batch']}x{p['seq_len']} tokens, {a.seeds} seeds, {meta['card']} ({meta['date_utc']})")
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
