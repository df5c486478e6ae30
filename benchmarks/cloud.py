"""Cloud backends on this machine, side by side in one run (docs/cloud.md):

1. `apt-ext serve` throughput (requests/s, tokens/s) and latency p50/p95 at 1, 4 and 16
   concurrent clients against the same model's local `generate` (one request at a time, and
   batched in-process at the same sizes, the engine's own upper bound);
2. RemoteModule call overhead per forward of a 4096x4096 Linear at batch 1 and 64 on a local Ray
   instance against the local layer (same CPU: this is the cost of the hop, not of the compute).

    python benchmarks/cloud.py [--requests 32] [--max-tokens 32] [--repeats 2] [--threads 1]

--threads sets the intra-op threads of every party (this process, the server, the Ray actor):
on the shared 2-core machine, 2 OpenMP threads per process made a loaded run 6x slower.

Writes benchmarks/results/cloud_cpu.json and benchmarks/plots/cloud_cpu.png; prints a table.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_common import plot_path, run_meta, save_json  # noqa: E402

KEY = "bench-key"


def load() -> str:
    return open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "n/a"


def make_checkpoint(directory: Path) -> Path:
    """A 4-layer d_model 128 byte-level APT model (left-spin, autopoietic attention), random weights."""
    from apt_ext.model import APTModel, APTModelConfiguration
    from apt_ext.train.data import ByteTokenizer
    torch.manual_seed(0)
    cfg = APTModelConfiguration(vocab_size=256, d_model=128, num_heads=4, d_ff=512, num_encoder_layers=0,
                                num_decoder_layers=4, decoder_only=True, dropout=0.0, max_seq_len=256)
    APTModel(cfg).save_pretrained(directory / "model")
    ByteTokenizer().save(directory / "tokenizer.json")
    return directory


def prompts(n: int) -> list[str]:
    return [f"Request {i}: the capital of country {i % 7} is" for i in range(n)]


def summarise(latencies: list[float], wall: float, tokens: int, n: int) -> dict:
    lat = np.asarray(latencies)
    return {"requests": n, "wall_s": wall, "requests_per_s": n / wall, "tokens_per_s": tokens / wall,
            "latency_p50_s": float(np.percentile(lat, 50)), "latency_p95_s": float(np.percentile(lat, 95))}


def bench_server(url: str, texts: list[str], concurrency: int, max_tokens: int) -> dict:
    import httpx
    latencies: list[float] = []
    tokens = [0]
    lock = threading.Lock()
    work = list(texts)

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=600) as c:
            while True:
                with lock:
                    if not work:
                        return
                    p = work.pop()
                t0 = time.perf_counter()
                r = c.post("/completions", json={"model": "bench", "prompt": p, "max_tokens": max_tokens,
                                                 "temperature": 0})
                r.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    tokens[0] += r.json()["usage"]["completion_tokens"]
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarise(latencies, time.perf_counter() - t0, tokens[0], len(texts))


def server_stats(url: str) -> dict:
    import httpx
    return httpx.get(url[:-3] + "/stats", headers={"Authorization": f"Bearer {KEY}"}).json()


def bench_local(model, texts: list[str], batch: int, max_tokens: int) -> dict:
    """In process: the model's own `generate` (greedy, KV cache) on `batch` prompts at a time,
    left-padded (batch 1 = one request at a time)."""
    latencies: list[float] = []
    tokens = 0
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        rows = [list(p.encode()) for p in texts[i:i + batch]]
        width = max(map(len, rows))
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.bool)
        ts = time.perf_counter()
        out = model.generate(ids, max_tokens, attention_mask=mask if len(set(map(len, rows))) > 1 else None)
        [bytes(o[width:].tolist()).decode("utf-8", errors="replace") for o in out]
        latencies += [time.perf_counter() - ts] * len(rows)
        tokens += (out.shape[1] - width) * len(rows)
    return summarise(latencies, time.perf_counter() - t0, tokens, len(texts))


LEVELS = (1, 4, 16)


def serving_part(args, tmp: Path) -> dict:
    """Each repeat measures every level back to back: the server with c clients, local generate
    at batch c and local generate one at a time, so each ratio compares runs of the same minute
    (the shared machine's load drifts)."""
    from cloud_helpers import Server

    from apt_ext.model import APTModel
    ckpt = make_checkpoint(tmp / "ckpt")
    model = APTModel.from_pretrained(ckpt / "model").eval()
    texts = prompts(args.requests)
    bench_local(model, texts[:2], 2, 4)   # warm-up
    runs = {c: {"server": [], "local_batch": [], "local_one": []} for c in LEVELS}
    server = Server(ckpt, "--max-batch", "16", "--max-tokens", str(args.max_tokens), "--model-name", "bench",
                    keys=KEY, threads=args.threads)
    try:
        bench_server(server.url, texts[:4], 1, 4)   # warm-up
        bar = tqdm(total=args.repeats * len(LEVELS), desc="serving", unit="level")
        for _ in range(args.repeats):
            for c in LEVELS:
                before = server_stats(server.url)
                r = bench_server(server.url, texts, c, args.max_tokens)
                after = server_stats(server.url)
                r["mean_batch"] = (after["requests"] - before["requests"]) / max(after["batches"] - before["batches"], 1)
                runs[c]["server"].append(r)
                runs[c]["local_one"].append(bench_local(model, texts, 1, args.max_tokens))
                runs[c]["local_batch"].append(runs[c]["local_one"][-1] if c == 1 else
                                              bench_local(model, texts, c, args.max_tokens))
                bar.update()
        bar.close()
    finally:
        server.kill()
    out = {}
    for c in LEVELS:
        rr = runs[c]
        ratio = lambda other: statistics.median(s["requests_per_s"] / o["requests_per_s"]
                                                for s, o in zip(rr["server"], rr[other]))
        out[str(c)] = {k: _median_run(v) for k, v in rr.items()} | {
            "server_vs_local_one": ratio("local_one"), "server_vs_local_batch": ratio("local_batch")}
    return out


def _median_run(runs: list[dict]) -> dict:
    """The run with the median requests/s (all runs kept under 'runs')."""
    ordered = sorted(runs, key=lambda r: r["requests_per_s"])
    return ordered[len(ordered) // 2] | {"runs": runs}


def remote_part(args) -> dict:
    from apt_ext.cloud import RemoteModule, connect
    connect(num_cpus=2, object_store_memory=512 * 2**20)
    torch.manual_seed(0)
    lin = nn.Linear(4096, 4096)
    t0 = time.perf_counter()
    remote = RemoteModule(copy.deepcopy(lin), resources={"CPU": args.threads}, timeout=120)
    out: dict = {}
    with torch.no_grad():
        remote(torch.randn(1, 4096))   # starts the actor and sends the weights
        out["first_call_s"] = time.perf_counter() - t0
        for m in tqdm((1, 64), desc="remote", unit="batch"):
            x = torch.randn(m, 4096)
            torch.testing.assert_close(remote(x), lin(x), rtol=1e-4, atol=1e-4)
            t_local, t_remote = [], []
            for _ in range(args.calls):
                t = time.perf_counter()
                lin(x)
                t_local.append(time.perf_counter() - t)
                t = time.perf_counter()
                remote(x)
                t_remote.append(time.perf_counter() - t)
            loc, rem = statistics.median(t_local), statistics.median(t_remote)
            out[str(m)] = {"local_ms": loc * 1e3, "remote_ms": rem * 1e3, "overhead_ms": (rem - loc) * 1e3,
                           "remote_p95_ms": float(np.percentile(t_remote, 95)) * 1e3, "calls": args.calls}
    out["stats"] = {k: v for k, v in remote.get_stats().items() if k != "last_error"}
    remote.shutdown()
    import ray
    ray.shutdown()
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    cs = list(LEVELS)
    sv = res["serving"]
    s = {k: v["server"] for k, v in sv.items()}
    lg = {k: v["local_batch"] for k, v in sv.items()}
    a.plot(cs, [s[str(x)]["tokens_per_s"] for x in cs], "o-", label="apt-ext serve (HTTP)")
    a.plot(cs, [lg[str(x)]["tokens_per_s"] for x in cs], "s--", label="local generate, batch = clients")
    a.plot(cs, [sv[str(x)]["local_one"]["tokens_per_s"] for x in cs], "^:", color="gray",
           label="local generate, one at a time")
    a.set_xscale("log", base=2)
    a.set_xlabel("concurrent clients")
    a.set_ylabel("generated tokens / s")
    a.legend(fontsize=8)
    a.set_title("throughput")
    b.plot(cs, [s[str(x)]["latency_p50_s"] for x in cs], "o-", label="serve p50")
    b.plot(cs, [s[str(x)]["latency_p95_s"] for x in cs], "o--", label="serve p95")
    b.plot(cs, [lg[str(x)]["latency_p50_s"] for x in cs], "s-", label="local batch p50")
    b.set_xscale("log", base=2)
    b.set_xlabel("concurrent clients")
    b.set_ylabel("seconds per request")
    b.legend(fontsize=8)
    b.set_title("latency")
    r = res["remote"]
    xs = np.arange(2)
    c.bar(xs - 0.2, [r[m]["local_ms"] for m in ("1", "64")], 0.4, label="local nn.Linear")
    c.bar(xs + 0.2, [r[m]["remote_ms"] for m in ("1", "64")], 0.4, label="RemoteModule (Ray actor, same CPU)")
    c.set_xticks(xs, ["batch 1", "batch 64"])
    c.set_ylabel("ms per forward (median)")
    c.set_title("4096x4096 Linear")
    c.legend(fontsize=8)
    fig.suptitle(f"cloud backends on {res['meta']['card']} ({res['meta']['cpu_count']} cores), load {res['load_before']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--calls", type=int, default=20, help="timed forwards per batch size (RemoteModule)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of each process (see above)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    res = {"meta": run_meta(torch.device("cpu")), "load_before": load(), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        res["serving"] = serving_part(args, Path(tmp))
    res["remote"] = remote_part(args)
    res["load_after"] = load()
    out = save_json("cloud_cpu", res)
    plot(res, plot_path("cloud_cpu"))
    print(f"\nload {res['load_before']} -> {res['load_after']}; JSON {out}")
    print(f"{'clients':>7} | {'serve req/s':>11} {'tok/s':>7} {'p50 s':>6} {'p95 s':>6} {'batch':>5} | "
          f"{'local batch req/s':>17} {'one-at-a-time':>13} | serve vs one-at-a-time, vs local batch")
    for c in map(str, LEVELS):
        v = res["serving"][c]
        s, lb, lo = v["server"], v["local_batch"], v["local_one"]
        print(f"{c:>7} | {s['requests_per_s']:11.2f} {s['tokens_per_s']:7.1f} {s['latency_p50_s']:6.3f} "
              f"{s['latency_p95_s']:6.3f} {s['mean_batch']:5.1f} | {lb['requests_per_s']:17.2f} "
              f"{lo['requests_per_s']:13.2f} | {v['server_vs_local_one']:.2f}x, {v['server_vs_local_batch']:.2f}x")
    for m in ("1", "64"):
        r = res["remote"][m]
        print(f"RemoteModule 4096x4096 batch {m}: local {r['local_ms']:.2f} ms, remote {r['remote_ms']:.2f} ms, "
              f"overhead {r['overhead_ms']:.2f} ms")
    st = res["remote"]["stats"]
    print(f"weights sent {st['weight_syncs']}x ({st['bytes_weights'] / 2**20:.1f} MiB), first call "
          f"{res['remote']['first_call_s']:.1f} s (actor start + weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
