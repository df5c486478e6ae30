"""Running ``apt-ext`` as a user does, in a fresh interpreter: the console script's code path
(``sys.argv[0]`` is ``apt-ext``, so ``import apt_ext`` defers torch), optionally with packages
made unimportable, as if they were not installed."""
from __future__ import annotations

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


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line a failed command printed on stderr (asserts that it is one line and no traceback)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("CPU threads:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]
