"""Training on a busy CPU: how many torch threads? And how long does `apt-ext demo` take?

`apt-ext train` and `apt-ext demo` use, on a CPU, as many intra-op threads as CPUs are left free
by other work (``apt_ext.devices.threads_for_load``: CPUs minus the 1-minute load average, at
least 1). This times optimizer steps of the demo's model (decoder-only, 4 layers x d_model 128,
batch 12 x 128 tokens, byte tokenizer) with every thread count from 1 to the CPU count, first on
the machine as it is, then with ``--busy`` extra processes that spin on the CPU (standing in for
other users' work; the script waits ``--settle`` seconds so the load average shows them). Each
setting: ``--steps`` steps, the first ``--warmup`` not counted, median step time; the settings
alternate over ``--rounds`` rounds so a change in the machine's load hits all of them alike.

``--demo`` also runs ``apt-ext demo`` once (its defaults: 500 steps on a CPU, threads chosen from
the load) as a user would, and records its wall time.

    python benchmarks/cpu_threads.py [--busy 2] [--demo]

Writes benchmarks/results/cpu_threads.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_common import run_meta, save_json  # noqa: E402

from apt_ext.devices import available_cpus, threads_for_load  # noqa: E402
from apt_ext.model import APTModelConfiguration  # noqa: E402
from apt_ext.train import TrainConfig, Trainer  # noqa: E402


def step_ms(threads: int, steps: int, warmup: int, tmp: str) -> list[float]:
    """Step times (ms) of the demo's model trained for ``steps`` steps with ``threads`` threads."""
    torch.set_num_threads(threads)
    mc = APTModelConfiguration(vocab_size=256, d_model=128, num_heads=4, d_ff=512, num_encoder_layers=0,
                               num_decoder_layers=4, decoder_only=True, dropout=0.0, max_seq_len=128)
    tc = TrainConfig(tokenizer="byte", steps=steps, batch_size=12, seq_len=128, warmup_steps=2, eval_every=0,
                     eval_batches=1, out_dir=tmp, device="cpu", progress=False, plot=False)
    return [t * 1e3 for t in Trainer(tc, mc).run().step_times[warmup:]]


def measure(label: str, busy: int, args: argparse.Namespace, tmp: str) -> list[dict]:
    """Median step time of every thread count under ``busy`` extra spinning processes."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        if busy:
            time.sleep(args.settle)
        load = os.getloadavg()[0]
        auto = threads_for_load()
        times: dict[int, list[float]] = {t: [] for t in range(1, available_cpus() + 1)}
        for _ in range(args.rounds):
            for t in times:
                times[t] += step_ms(t, args.steps, args.warmup, tmp)
        rows = [{"condition": label, "busy_processes": busy, "load_average_1min": round(load, 2),
                 "threads": t, "chosen_by_threads_for_load": t == auto, "step_ms_median": statistics.median(v),
                 "step_ms": [round(x, 1) for x in v]} for t, v in times.items()]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    for r in rows:
        print(f"{label}: load {r['load_average_1min']:.1f}, {r['threads']} threads"
              f"{' (threads_for_load)' if r['chosen_by_threads_for_load'] else ''}: {r['step_ms_median']:.0f} ms a step")
    return rows


def time_demo(tmp: str) -> dict:
    """Wall time of `apt-ext demo` with its defaults, as a user runs it."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'apt-ext'; from apt_ext.cli.main "
                           "import main; sys.exit(main())", "demo", "--out-dir", tmp], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    threads = next((line for line in proc.stderr.splitlines() if line.startswith("CPU threads:")), "")
    print(f"apt-ext demo: exit code {proc.returncode}, {seconds:.0f} s ({threads})")
    return {"exit_code": proc.returncode, "wall_s": round(seconds, 1), "load_average_1min_start": round(load, 2),
            "load_average_1min_end": round(os.getloadavg()[0], 2), "threads_line": threads,
            "summary": proc.stdout[proc.stdout.find("== summary =="):].strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--busy", type=int, default=available_cpus(), help="spinning processes for the busy run")
    ap.add_argument("--settle", type=float, default=75.0, help="seconds for the load average to show them")
    ap.add_argument("--steps", type=int, default=8, help="steps per setting and round")
    ap.add_argument("--warmup", type=int, default=2, help="first steps not counted")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--demo", action="store_true", help="also time `apt-ext demo` with its defaults")
    args = ap.parse_args()
    load_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure("as is", 0, args, tmp) + measure(f"{args.busy} busy processes", args.busy, args, tmp)
        demo = time_demo(tmp) if args.demo else None
    meta = run_meta(torch.device("cpu"))
    meta.update(cpus=available_cpus(), load_average_start=load_start, load_average_end=list(os.getloadavg()))
    out = save_json("cpu_threads", {**meta, "params": vars(args), "rows": rows, "demo": demo})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
