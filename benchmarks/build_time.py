"""Clean-build time of the C++ extension: CMake configure, then ninja, timed per translation unit.

    python benchmarks/build_time.py                         # this checkout -> results/build_time_cpu.json
    python benchmarks/build_time.py --source DIR --label baseline   # another tree (e.g. `git archive` of main)

Configures a fresh build folder (ccache off, so nothing is reused), builds with ``--jobs`` ninja
jobs (default: every core) and records, per translation unit, its wall seconds (from ninja's
.ninja_log) and its CPU seconds (user + system, from /usr/bin/time run as the compiler launcher).
On a shared machine other builds stretch the wall times; CPU seconds move much less, so both are
kept, with the load average before and after. Writes ``results/build_time_cpu[_<label>].json``.
The torch is the one this Python imports.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_info import cpu_model
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def load_avg() -> list[float]:
    """1, 5 and 15-minute load averages, rounded to 0.01."""
    return [round(x, 2) for x in os.getloadavg()]


def first_line(cmd: list[str]) -> str:
    """First line of ``cmd``'s output ("" when it cannot run)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        return ""


def git_commit(src: Path) -> str | None:
    """HEAD of ``src`` when it is a git checkout with no local changes to csrc/ or CMake files."""
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "csrc", "CMakeLists.txt"],
                           capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + ("+local changes" if dirty else "")


def ninja_log_seconds(build_dir: Path) -> dict[str, float]:
    """Seconds per output of the last ninja run, from .ninja_log (tab-separated start ms, end ms, ...)."""
    out: dict[str, float] = {}
    for line in (build_dir / ".ninja_log").read_text().splitlines():
        if line.startswith("#"):
            continue
        start, end, _mtime, output = line.split("\t")[:4]
        out[output] = (int(end) - int(start)) / 1e3
    return out


def source_of(output: str) -> str:
    """csrc/x.cpp for CMake's object CMakeFiles/_C.dir/csrc/x.cpp.o; other outputs unchanged."""
    m = re.match(r"CMakeFiles/[^/]+\.dir/(.+)\.o$", output)
    return m.group(1) if m else output


def cpu_seconds(times_file: Path) -> dict[str, float]:
    """User + system CPU seconds per object file, from the /usr/bin/time lines of the launcher."""
    out: dict[str, float] = {}
    if not times_file.exists():
        return out
    for line in times_file.read_text().splitlines():
        parts = line.split(" ")
        if len(parts) < 3 or "-o" not in parts:
            continue
        obj = parts[parts.index("-o") + 1]
        out[obj] = float(parts[0]) + float(parts[1])
    return out


def run_ninja(build_dir: Path, jobs: int) -> None:
    """ninja -j jobs in build_dir with a progress bar fed by ninja's [done/total] lines."""
    env = dict(os.environ, NINJA_STATUS="[%f/%t] ")
    proc = subprocess.Popen(["ninja", "-C", str(build_dir), "-j", str(jobs)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    log: list[str] = []
    with tqdm(desc="compiling", unit="step") as bar:
        for line in proc.stdout:
            log.append(line)
            m = re.match(r"\[(\d+)/(\d+)\]", line)
            if m:
                bar.total = int(m.group(2))
                bar.n = int(m.group(1))
                bar.refresh()
    if proc.wait() != 0:
        sys.stderr.write("".join(log[-60:]))
        raise SystemExit(f"build_time: ninja failed in {build_dir}")


def measure(src: Path, jobs: int, keep: Path | None) -> dict:
    """Configure and build ``src`` in a fresh folder; wall seconds and per-TU seconds."""
    import torch

    build_dir = keep or Path(tempfile.mkdtemp(prefix="apt_build_time_"))
    if build_dir.exists():
        shutil.rmtree(build_dir)
    load_start = load_avg()
    times_file = build_dir / "tu_cpu_times.txt"
    launcher = []
    if Path("/usr/bin/time").exists():  # GNU time: "user system command..." appended per compile
        launcher = [f"-DCMAKE_CXX_COMPILER_LAUNCHER=/usr/bin/time;-a;-o;{times_file};-f;%U %S %C"]
    t0 = time.perf_counter()
    cfg = subprocess.run(["cmake", "-G", "Ninja", "-S", str(src), "-B", str(build_dir),
                          f"-DPython_EXECUTABLE={sys.executable}", "-DCMAKE_BUILD_TYPE=Release",
                          "-DAPT_USE_CCACHE=OFF", *launcher], capture_output=True, text=True)
    if cfg.returncode != 0:
        sys.stderr.write(cfg.stdout[-4000:] + cfg.stderr[-4000:])
        raise SystemExit("build_time: cmake configure failed")
    t1 = time.perf_counter()
    run_ninja(build_dir, jobs)
    t2 = time.perf_counter()
    load_end = load_avg()
    per_output = ninja_log_seconds(build_dir)
    units = {source_of(o): s for o, s in per_output.items() if o.endswith(".o")}
    cpu = {source_of(o): s for o, s in cpu_seconds(times_file).items()}
    link = sum(s for o, s in per_output.items() if not o.endswith(".o"))
    notes = [line.split("apt_ext: ", 1)[1] for line in cfg.stdout.splitlines() if "apt_ext: " in line]
    if keep is None:
        shutil.rmtree(build_dir, ignore_errors=True)
    return {
        "configure_s": round(t1 - t0, 1),
        "build_s": round(t2 - t1, 1),
        "total_s": round(t2 - t0, 1),
        "link_s": round(link, 1),
        "sum_of_units_s": round(sum(units.values()), 1),
        "sum_of_units_cpu_s": round(sum(cpu.values()), 1) if cpu else None,
        "units": {k: {"wall_s": round(v, 1), "cpu_s": round(cpu[k], 1) if k in cpu else None}
                  for k, v in sorted(units.items(), key=lambda kv: -kv[1])},
        "configure_notes": notes,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", type=Path, default=REPO, help="tree to build (default: this checkout)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="ninja jobs (default: cores)")
    ap.add_argument("--label", default="", help="suffix of the JSON name, e.g. 'baseline'")
    ap.add_argument("--note", default="", help="free text stored in the JSON (what else ran on the machine)")
    ap.add_argument("--keep-build-dir", type=Path, default=None, help="build here and keep it (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    src = args.source.resolve()
    if not (src / "CMakeLists.txt").is_file():
        ap.error(f"--source {src} has no CMakeLists.txt")
    result = {
        "benchmark": "build_time",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "cores": os.cpu_count(),
        "compiler": first_line(["c++", "--version"]),
        "cmake": first_line(["cmake", "--version"]),
        "ninja": first_line(["ninja", "--version"]),
        "source_commit": git_commit(src),
        "jobs": args.jobs,
        "note": args.note,
        "command": "python benchmarks/build_time.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    result.update(measure(src, args.jobs, args.keep_build_dir))
    name = "build_time_cpu" + (f"_{args.label}" if args.label else "") + ".json"
    out = HERE / "results" / name
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"configure {result['configure_s']} s, build {result['build_s']} s (jobs {args.jobs}), "
          f"total {result['total_s']} s; load average {result['load_average_start']} -> "
          f"{result['load_average_end']}")
    for unit, sec in list(result["units"].items())[:8]:
        print(f"  wall {sec['wall_s']:7.1f} s  cpu {sec['cpu_s']} s  {unit}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
