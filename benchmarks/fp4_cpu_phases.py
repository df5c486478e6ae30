"""Where the second thread's time goes in fp4_linear at M = 1 on the CPU (issue 18's
"2 threads at least 1.7x faster than 1" goal): the same call timed in the phases that can be
told apart from outside, at 1 and 2 intra-op threads.

    python benchmarks/fp4_cpu_phases.py [--repeats 31] [--out PATH]

Per (N, K), format and thread count, medians of ``--repeats`` calls (float32 x [1, K]):
- ``cold_ms``: one call after a 64 MiB buffer was read (the weight comes from DRAM, as in
  benchmarks/fp4_cpu.py, whose rounds run the other implementations in between);
- ``warm_ms``: one call right after another of the same layer (the weight in the L3 cache);
- ``idle_ms``: a warm call after ``--idle-ms`` of sleep (the OpenMP workers have gone to sleep);
- ``cold_gbs`` / ``warm_gbs``: weight bytes (codes + scales) per second of those calls.
Alongside: ``stream_cold_gbs``, torch's ``sum`` over a cold float32 buffer of the weight's size
(plain streaming read bandwidth of the machine at that thread count), and small layers whose
time is mostly fixed cost: N = 64 (one 64-row piece, no parallel region) and N = 128 (two
pieces, one per thread).

Writes benchmarks/results/fp4_cpu_phases_<path>.json (path: the FP4 CPU ISA path in use).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fp4_cpu import machine  # noqa: E402

from apt_ext.fp4 import FORMATS  # noqa: E402
from apt_ext.nn import FP4Linear  # noqa: E402

HERE = Path(__file__).resolve().parent
SHAPES = ((4096, 4096), (11008, 4096), (64, 4096), (128, 4096))
EVICT_BYTES = 64 << 20


def weight_bytes(layer: FP4Linear) -> int:
    """Bytes fp4_linear reads from the weight: packed codes and block scales."""
    return sum(t.numel() * t.element_size() for t in (layer.packed, layer.scales))


def median_ms(fn, before, repeats: int) -> float:
    """Median ms of fn() over ``repeats`` calls, each after before()."""
    times = []
    for _ in range(repeats):
        before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=31, help="timed calls per case (median)")
    p.add_argument("--idle-ms", type=float, default=20.0, help="sleep before each idle_ms call")
    p.add_argument("--out", type=Path, default=None, help="default: results/fp4_cpu_phases_<path>.json")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats: expected a positive int")
    threads = sorted({1, torch.get_num_threads()})
    evict_buf = torch.ones(EVICT_BYTES // 4)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(), "repeats": args.repeats, "idle_ms": args.idle_ms,
              "load_average_start": list(os.getloadavg()), "rows": []}
    gen = torch.Generator().manual_seed(0)
    bar = tqdm(total=len(SHAPES) * len(FORMATS) * len(threads), desc="phases", file=sys.stderr)
    for n, k in SHAPES:
        lin = nn.Linear(k, n, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(n, k, generator=gen) * k ** -0.5)
        x = torch.randn(1, k, generator=gen)
        for fmt in FORMATS:
            layer = FP4Linear.from_linear(lin, fmt=fmt)
            nbytes = weight_bytes(layer)
            stream = torch.ones(nbytes // 4)
            for t in threads:
                torch.set_num_threads(t)
                with torch.inference_mode():
                    call = lambda: layer(x)  # noqa: E731
                    call(), call()
                    cold = median_ms(call, lambda: evict_buf.sum(), args.repeats)
                    warm = median_ms(call, call, args.repeats)
                    idle = median_ms(call, lambda: (call(), time.sleep(args.idle_ms / 1e3)), args.repeats)
                    stream_ms = median_ms(lambda: stream.sum(), lambda: evict_buf.sum(), args.repeats)
                row = {"N": n, "K": k, "fmt": fmt, "threads": t, "weight_bytes": nbytes, "cold_ms": cold,
                       "warm_ms": warm, "idle_ms": idle, "cold_gbs": nbytes / cold / 1e6,
                       "warm_gbs": nbytes / warm / 1e6, "stream_cold_gbs": nbytes / stream_ms / 1e6}
                result["rows"].append(row)
                bar.update()
                tqdm.write(f"N={n:5d} K={k} {fmt:5s} threads={t}: cold {cold:6.3f} ms ({row['cold_gbs']:5.2f} GB/s)"
                           f"  warm {warm:6.3f} ms ({row['warm_gbs']:5.2f} GB/s)  idle {idle:6.3f} ms"
                           f"  stream-read {row['stream_cold_gbs']:5.2f} GB/s")
    bar.close()
    result["load_average_end"] = list(os.getloadavg())
    out = args.out or HERE / "results" / f"fp4_cpu_phases_{result['machine']['fp4_cpu_isa']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
