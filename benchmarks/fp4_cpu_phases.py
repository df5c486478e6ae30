"""Where the second thread's time goes in fp4_linear at M = 1 on the CPU (issue 18's
"2 threads at least 1.7x faster than 1" goal): the same call timed in the phases that can be
told apart from outside, at 1 and 2 intra-op threads.

    python benchmarks/fp4_cpu_phases.py [--repeats 31] [--out PATH]

Per (N, K), format and thread count, medians of ``--repeats`` calls (float32 x [1, K]; each
repeat times every phase at 1 and 2 threads in alternating order):
- ``cold_ms``: one call after a 64 MiB buffer was read (the weight comes from DRAM, as in
  benchmarks/fp4_cpu.py, whose rounds run the other implementations in between);
- ``warm_ms``: one call right after another of the same layer (the weight in the L3 cache);
- ``idle_ms``: a warm call after ``--idle-ms`` of sleep (the OpenMP workers have gone to sleep);
- ``cold_gbs`` / ``warm_gbs``: weight bytes (codes + scales) per second of those calls.
- ``op_cold_ms`` / ``op_warm_ms``: ``torch.ops.apt.fp4_linear.default`` called directly on the
  layer's tensors (what the module's Python adds is the difference from ``cold_ms``).
Alongside: ``stream_cold_gbs``, torch's ``sum`` over a cold float32 buffer of the weight's size
(plain streaming read bandwidth of the machine at that thread count), and small layers whose
time is mostly fixed cost: N = 64 (one 64-row piece, no parallel region) and N = 128 (two
pieces, one per thread). Rows with fmt ``torch-int4`` time torch's int4 CPU kernel (bf16 x,
groups of 128; benchmarks/fp4_cpu.py's peer) the same way (``cold_ms``, ``warm_ms``, ``idle_ms``),
so the fixed costs can be compared.

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
from fp4_cpu import TorchInt4, machine  # noqa: E402

from apt_ext.fp4 import FORMATS  # noqa: E402
from apt_ext.nn import FP4Linear  # noqa: E402

HERE = Path(__file__).resolve().parent
SHAPES = ((4096, 4096), (11008, 4096), (64, 4096), (128, 4096))
EVICT_BYTES = 64 << 20


def weight_bytes(layer: FP4Linear) -> int:
    """Bytes fp4_linear reads from the weight: packed codes and block scales."""
    return sum(t.numel() * t.element_size() for t in (layer.packed, layer.scales))


def paired_ms(cases: dict, threads: list[int], repeats: int) -> dict:
    """{(case, threads): median ms} of each case's fn() (each call after its before()), for
    ``cases`` {name: (fn, before)}: every repeat runs every case at every thread count, the
    thread counts in alternating order, so that a slow spell of a shared VM lands on all of
    them alike instead of on whichever ran then."""
    times: dict = {(name, t): [] for name in cases for t in threads}
    for r in range(repeats):
        for t in (threads if r % 2 == 0 else threads[::-1]):
            torch.set_num_threads(t)
            for name, (fn, before) in cases.items():
                before()
                t0 = time.perf_counter()
                fn()
                times[(name, t)].append(time.perf_counter() - t0)
    return {key: 1e3 * statistics.median(v) for key, v in times.items()}


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
    bar = tqdm(total=len(SHAPES) * (len(FORMATS) + 1) * len(threads), desc="phases", file=sys.stderr)
    for n, k in SHAPES:
        lin = nn.Linear(k, n, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(n, k, generator=gen) * k ** -0.5)
        x = torch.randn(1, k, generator=gen)
        for fmt in (*FORMATS, "torch-int4"):
            if fmt == "torch-int4":
                int4, x_bf16 = TorchInt4(lin.weight.detach()), x.to(torch.bfloat16)
                nbytes = sum(t.numel() * t.element_size() for t in (int4.packed, int4.scales_and_zeros))
                call = lambda: int4(x_bf16)  # noqa: E731
                op = None
            else:
                layer = FP4Linear.from_linear(lin, fmt=fmt)
                nbytes = weight_bytes(layer)
                call = lambda: layer(x)  # noqa: E731
                op = lambda: torch.ops.apt.fp4_linear.default(x, layer.packed, layer.scales,  # noqa: E731
                                                              layer.tensor_scale, None, layer.fmt, layer.block_size)
            stream = torch.ones(nbytes // 4)
            with torch.inference_mode():
                call(), call()
                evict = evict_buf.sum
                cases = {"cold": (call, evict), "warm": (call, call),
                         "idle": (call, lambda: (call(), time.sleep(args.idle_ms / 1e3))),
                         "stream": (stream.sum, evict)}
                if op is not None:
                    cases.update(op_cold=(op, evict), op_warm=(op, op))
                ms = paired_ms(cases, threads, args.repeats)
            for t in threads:
                cold, warm, stream_ms = ms[("cold", t)], ms[("warm", t)], ms[("stream", t)]
                row = {"N": n, "K": k, "fmt": fmt, "threads": t, "weight_bytes": nbytes, "cold_ms": cold,
                       "warm_ms": warm, "idle_ms": ms[("idle", t)], "op_cold_ms": ms.get(("op_cold", t)),
                       "op_warm_ms": ms.get(("op_warm", t)), "cold_gbs": nbytes / cold / 1e6,
                       "warm_gbs": nbytes / warm / 1e6, "stream_cold_gbs": nbytes / stream_ms / 1e6}
                result["rows"].append(row)
                bar.update()
                tqdm.write(f"N={n:5d} K={k} {fmt:5s} threads={t}: cold {cold:6.3f} ms ({row['cold_gbs']:5.2f} GB/s)"
                           f"  warm {warm:6.3f} ms ({row['warm_gbs']:5.2f} GB/s)  idle {row['idle_ms']:6.3f} ms"
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
