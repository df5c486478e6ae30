"""Running a test file's Triton kernels under the CPU interpreter (TRITON_INTERPRET=1).

The interpreter must be on before triton compiles a kernel, so in a normal run one test of the
file re-runs the whole file in a subprocess with the variable set; the file's kernel tests carry
``interpreted`` and run only there."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not INTERPRET, reason="runs in the TRITON_INTERPRET=1 subprocess")
outside_interpreter = pytest.mark.skipif(INTERPRET, reason="already under the interpreter")


def run_under_interpreter(path: str, timeout: int = 600) -> None:
    """Runs pytest on ``path`` with TRITON_INTERPRET=1; fails with its output unless it passes."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
