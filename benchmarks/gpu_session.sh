#!/usr/bin/env bash
# One batched GPU session (device machine): build, GPU tests, benchmarks; everything lands in
# $OUT (logs + one tarball of benchmarks/results and benchmarks/plots).
# Usage: bash benchmarks/gpu_session.sh STAGE...   stages: build test sanitizer fp4 e2e left_spin vgpu model memory
#   (each stage's log: $OUT/<stage>.log; a stage failing does not stop the later ones)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/apt_out}
mkdir -p "$OUT" benchmarks/results benchmarks/plots
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=16
PY=python3
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
stage() {  # name, command...
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$(date +%s)
  ( "$@" ) > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc in $(( $(date +%s) - t0 )) s"
  tail -n 25 "$OUT/$name.log"
}
for s in "$@"; do
  case $s in
    build) stage build $PY -m pip install -v --no-build-isolation -e . ;;
    test) stage test $PY -m pytest -q -x tests/gpu ;;
    sanitizer) stage sanitizer compute-sanitizer --tool memcheck --error-exitcode 1 $PY -m pytest -q tests/gpu -k sanitizer ;;
    fp4) stage fp4 $PY benchmarks/fp4_linear.py ;;
    e2e) stage e2e $PY benchmarks/e2e_encoder.py ;;
    left_spin) stage left_spin $PY benchmarks/left_spin.py ;;
    vgpu) stage vgpu $PY benchmarks/vgpu.py ;;
    model) stage model $PY benchmarks/model_throughput.py ;;
    *) echo "unknown stage $s"; exit 2 ;;
  esac
done
tar czf "$OUT/results.tgz" benchmarks/results benchmarks/plots 2>/dev/null
$PY -m apt_ext.cli.main info > "$OUT/info.txt" 2>&1
