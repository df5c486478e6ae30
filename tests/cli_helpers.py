"""Running ``apt-ext`` as a user does, in a fresh interpreter: the console script's code path
(``sys.argv[0]`` is ``apt-ext``, so ``import apt_ext`` defers torch), optionally with packages
made unimportable, as if they were not installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli_command(*args: str, missing: tuple[str, ...] = (), report_modules: bool = False) -> list[str]:
    """The argv that runs ``apt-ext ARGS`` in a fresh interpreter. ``missing``: top-level
    packages whose import fails (ModuleNotFoundError) as if not installed. ``report_modules``:
    print, as the last stderr line, whether torch was imported."""
    code = ["import sys", "sys.argv[0] = 'apt-ext'"]
    if missing:
        code.append(f"sys.modules.update(dict.fromkeys({list(missing)!r}))")
    code.append("from apt_ext.cli.main import main")
    if report_modules:
        code += ["try:", "    rc = main()", "except SystemExit as exc:", "    rc = exc.code",
                 "print('torch imported:', 'torch' in sys.modules, file=sys.stderr)", "sys.exit(rc)"]
    else:
        code.append("sys.exit(main())")
    return [sys.executable, "-c", "\n".join(code), *args]


def run_cli(*args: str, missing: tuple[str, ...] = (), report_modules: bool = False, cwd: str | Path | None = None,
            timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``apt-ext ARGS`` (see cli_command) and return the finished process (text output)."""
    return subprocess.run(cli_command(*args, missing=missing, report_modules=report_modules), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or ROOT, env={**os.environ, **(env or {})})


_BATCH = """
import contextlib, io, json, sys
sys.argv[0] = 'apt-ext'
from apt_ext.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    results.append((rc, out.getvalue(), err.getvalue()))
print(json.dumps(results))
"""


def run_cli_batch(argvs: list[list[str]], timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """Run ``apt-ext ARGV`` for each ARGV one after the other in one fresh interpreter (the
    console script's code path; torch is imported once, by the first command that needs it)."""
    proc = subprocess.run([sys.executable, "-c", _BATCH, json.dumps(argvs)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return [subprocess.CompletedProcess(argv, rc, out, err)
            for argv, (rc, out, err) in zip(argvs, json.loads(proc.stdout.splitlines()[-1]))]


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line a failed command printed on stderr (asserts that it is one line and no traceback)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("CPU threads:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]
