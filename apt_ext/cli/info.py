"""``apt-ext info``: which backend of which op is compiled and usable here, torch version and
the device manager's view."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show compiled/usable backends per op and the devices")
    p.add_argument("--json", action="store_true", help="print the raw capabilities() dict")
    p.add_argument("--no-ping", action="store_true", help="list configured cloud backends without contacting them")
    p.set_defaults(func=run)


def _mark(entry: dict) -> str:
    if entry["kernel"] is None:
        return "-"
    if not entry["usable"]:
        return "built"
    return "yes" if entry["kernel"] == "native" or entry["kernel"].startswith("Triton") else "py"


def run(args: argparse.Namespace) -> int:
    import apt_ext

    from apt_ext.cloud.report import backends_report, format_backends
    caps = apt_ext.capabilities()
    cloud = backends_report(ping=not args.no_ping)
    if args.json:
        print(json.dumps(caps | {"cloud_backends": cloud}, indent=2, default=str))
        return 0
    print(f"apt_ext {apt_ext.__version__}  torch {caps['torch']}  "
          f"(CUDA {caps['torch_cuda'] or '-'}, HIP {caps['torch_hip'] or '-'})")
    if not caps["native_loaded"]:
        print(f"native extension NOT loaded: {caps['native_error']}")
    b = caps["build"]
    print(f"build: CUDA kernels {'compiled for ' + b['cuda_archs'] if b.get('cuda') else 'not compiled'}; "
          f"CPU AVX2 {'yes' if b.get('cpu_avx2') else 'no'}, AVX-512 {'yes' if b.get('cpu_avx512') else 'no'}")
    for cap, use in caps["cpu_isa"].items():
        if cap != "paths":
            print(f"       {cap} CPU kernels: " + (f"{use['path']} (needs {', '.join(use['requires']) or 'no SIMD flags'})"
                                                  if "error" not in use else use["error"]))
    extra = {k: v for k, v in b.items() if k not in ("cuda", "cuda_archs", "x86_simd_compiled", "cpu_avx2", "cpu_avx512")}
    if extra:
        print("       " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in sorted(extra.items())))
    print(f"triton: {'usable' if caps['triton']['usable'] else 'not usable'} ({caps['triton']['reason']})"
          + ("; APT_FORCE_TRITON=1" if caps["force_triton"] else ""))
    print()
    print(f"{'op':30s} {'CUDA':>6s} {'Triton':>7s} {'CPU':>5s}   (yes = usable here, py = a Python composite, built = no device here)")
    for op, e in caps["ops"].items():
        print(f"{op:30s} {_mark(e['cuda']):>6s} {_mark(e['triton']):>7s} {_mark(e['cpu']):>5s}")
    print()
    print("\n".join(format_backends(cloud)) + "\n")
    dev = caps["devices"]
    if "error" in dev:
        print(f"devices: {dev['error']}")
        return 0
    print(f"device: {dev['device']} ({dev['accelerator']}, {dev['device_count']} visible)")
    for t, p in dev["probes"].items():
        state = f"available ({p['count']})" if p["available"] else f"unavailable: {p['reason']}"
        print(f"  {t:5s} {state}")
    return 0
