#!/usr/bin/env bash
# Checks to run on this (CPU) machine before spending device time, so that a device call does not
# find a compile failure: (1) nvcc on the CUDA sources (sm_80 and sm_90a, ptxas's resource report),
# (2) apt_ext's Triton kernels compiled for sm_90 with the device machine's Triton, (3) inductor's
# CUDA kernels for the APT training step (decomposed left-spin, autopoietic attention, GPT-2-small
# width) generated here and compiled with that Triton (tools/inductor_cuda_kernels.py).
# Usage: bash tools/preflight.sh [file.cu ...]   (default: every csrc/**/*.cu; "none" skips nvcc)
#   DEVICE_TRITON_WHEEL: the device's Triton wheel (default /opt/pypi/files/triton-3.6.0-*.whl,
#   the H200 machine's with torch 2.11); installed once into DEVICE_TRITON_DIR (default
#   /tmp/triton-device).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEEL=${DEVICE_TRITON_WHEEL:-$(ls /opt/pypi/files/triton-3.6.0-*.whl 2>/dev/null | head -n 1)}
DIR=${DEVICE_TRITON_DIR:-/tmp/triton-device}
if [ -z "$WHEEL" ] || [ ! -f "$WHEEL" ]; then
  echo "preflight: no device Triton wheel (set DEVICE_TRITON_WHEEL)"; exit 2
fi
[ -d "$DIR/triton" ] || "$PY" -m pip install -q --target "$DIR" --no-deps "$WHEEL"
rc=0
if [ "${1:-}" != "none" ]; then
  echo "== nvcc (sm_80, sm_90a)"
  PYTHON=$PY bash tools/nvcc_check.sh "$@" > /tmp/preflight_nvcc.log 2>&1 || rc=1
  grep -E "error|FAILED" /tmp/preflight_nvcc.log || echo "nvcc: ok (report in /tmp/preflight_nvcc.log)"
fi
echo "== apt_ext's Triton kernels for sm_90 with $(basename "$WHEEL")"
PYTHONPATH=$DIR "$PY" -m pytest -q -p no:cacheprovider tests/test_triton_compile_sm90.py | tail -n 1 || rc=1
echo "== inductor's CUDA kernels of the APT training step with $(basename "$WHEEL")"
out=$(mktemp -d)
"$PY" tools/inductor_cuda_kernels.py --target apt-model --form decomposed --autopoietic --size 2,768,12,1024,8 \
  --out "$out" --triton-path "$DIR" | tail -n 1 || rc=1
rm -rf "$out"
exit $rc
