"""tools/setup_env.sh says what it does: one line per step with its duration, the log's tail when
a step fails, and at the end what the build compiled (tools/build_summary.py)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from apt_ext import _native

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "tools" / "setup_env.sh"


def run_step(tmp_path: Path, *command: str) -> subprocess.CompletedProcess:
    """Runs setup_env.sh's step() function alone (cut out of the script) on ``command``."""
    step_fn = re.search(r"^step\(\) \{.*?^\}", SETUP.read_text(), re.S | re.M).group(0)
    script = f'set -euo pipefail\nLOG={tmp_path}/log\n{step_fn}\nstep "doing it" {" ".join(command)}\necho next-step\n'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def test_setup_env_is_valid_bash():
    subprocess.run(["bash", "-n", str(SETUP)], check=True)


def test_a_step_prints_one_line_with_its_duration(tmp_path):
    proc = run_step(tmp_path, "sh", "-c", "'echo noisy output; sleep 1'")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"setup_env: doing it \.\.\. done \([12] s\)\nnext-step\n", proc.stdout), proc.stdout
    assert "noisy output" in (tmp_path / "log").read_text()  # command output goes to the log only


def test_a_failing_step_stops_the_script_and_shows_the_log(tmp_path):
    proc = run_step(tmp_path, "sh", "-c", "'echo the reason >&2; exit 3'")
    assert proc.returncode == 1
    # the seconds: 0 alone, 1 or more on a loaded machine (the full suite on 2 cores)
    assert re.match(r"setup_env: doing it \.\.\. FAILED after \d+ s; last lines of ", proc.stdout), proc.stdout
    assert "the reason" in proc.stderr and "next-step" not in proc.stdout


def test_build_summary_names_torch_cuda_and_the_pager_libraries():
    if _native._C is None:
        pytest.skip("apt_ext._C is not built here")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "build_summary.py")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"built against torch {_native._build_config.TORCH_VERSION}")
    assert "CUDA kernels: " in lines[0]
    assert "vgpu_io_uring=" in lines[1] and "vgpu_xxhash=" in lines[1]
    assert lines[2].startswith("VGPU checksum: ")
    assert re.match(r"ops usable here: cpu \d+/\d+; cuda \d+/\d+; triton \d+/\d+", lines[3])
