#!/usr/bin/env bash
# Creates (or reuses) ./.venv with everything apt_ext needs, then builds the extension in it.
# Usage: bash tools/setup_env.sh        (APT_VENV=path to use another folder)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${APT_VENV:-.venv}

# System libraries of the VGPU pager (io_uring, xxhash). Optional: without them the pager
# builds with its pread backend and a bundled checksum is not used (the build says which).
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if ! dpkg -s liburing-dev libxxhash-dev >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && apt-get install -y -qq liburing-dev libxxhash-dev >/dev/null \
      || echo "setup_env: could not install liburing-dev/libxxhash-dev; continuing without them"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
# torch first and pinned: any other spec would download a multi-GB CUDA build.
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q "scikit-build-core>=0.10" cmake ninja numpy
"$PY" -m pip install -q --no-build-isolation -e ".[test]"
echo "setup_env: ready: $VENV (activate with: source $VENV/bin/activate)"
