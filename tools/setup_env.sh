#!/usr/bin/env bash
# Creates (or reuses) ./.venv with everything apt_ext needs, then builds the extension in it.
# Usage: bash tools/setup_env.sh        (APT_VENV=path to use another folder)
# Prints one line per step with its duration, then what the build compiled (CPU/CUDA kernels,
# SIMD, the pager's io_uring and checksum). Command output goes to build/setup_env.log; on a
# failure the log's last lines are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${APT_VENV:-.venv}
mkdir -p build
LOG=$PWD/build/setup_env.log
: > "$LOG"
START=$(date +%s)

# step "what it does" command...: one line, "... done (12 s)", or "... FAILED" plus the log's tail
# and status 1 (which ends the script under set -e unless the caller handles it).
step() {
  local what=$1 t0
  shift
  t0=$(date +%s)
  printf 'setup_env: %s ... ' "$what"
  echo "== $what: $*" >> "$LOG"
  if "$@" >> "$LOG" 2>&1; then
    printf 'done (%d s)\n' $(($(date +%s) - t0))
  else
    printf 'FAILED after %d s; last lines of %s:\n' $(($(date +%s) - t0)) "$LOG"
    tail -n 40 "$LOG" >&2
    return 1
  fi
}

# System libraries of the VGPU pager (io_uring, xxhash). Optional: without them the pager builds
# with its pread backend and zlib's CRC-32 (the summary at the end says which).
install_system_libs() {
  apt-get update -qq && apt-get install -y -qq liburing-dev libxxhash-dev
}
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && ! dpkg -s liburing-dev libxxhash-dev >/dev/null 2>&1; then
  step "installing liburing-dev and libxxhash-dev (apt-get)" install_system_libs \
    || echo "setup_env: continuing without liburing-dev/libxxhash-dev"
fi

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV" python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
# The project's runtime and test requirements, read from pyproject.toml (installed before the
# build so that the build step below is only the build).
requirements() {
  "$PY" - <<'EOF'
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's own copy of the same parser
    from pip._vendor import tomli as tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))
EOF
}
step "upgrading pip" "$PY" -m pip install -q --upgrade pip
# torch first and pinned: any other spec would download a multi-GB CUDA build.
step "installing torch 2.13.0" "$PY" -m pip install -q torch==2.13.0
step "installing the build tools (scikit-build-core, cmake, ninja)" \
  "$PY" -m pip install -q "scikit-build-core>=0.10" cmake ninja numpy
step "installing the runtime and test dependencies" "$PY" -m pip install -q -r <(requirements)
step "building apt_ext's C++ extension (several minutes on 2 cores)" \
  "$PY" -m pip install -q --no-build-isolation -e ".[test]"
"$PY" tools/build_summary.py | sed 's/^/setup_env: /'
echo "setup_env: ready in $(($(date +%s) - START)) s: $VENV (activate with: source $VENV/bin/activate)"
