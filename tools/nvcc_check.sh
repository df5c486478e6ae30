#!/usr/bin/env bash
# Compile-checks CUDA sources on a machine whose torch is a CPU build (no GPU needed): nvcc
# compiles each .cu against torch's headers for sm_80 and sm_90a and prints the ptxas resource
# report (registers, spills, stack), then checks that no sm_90a kernel had its wgmma pipeline
# serialized by ptxas (tools/wgmma_sass_check.py). Nothing is linked or installed.
# Usage: bash tools/nvcc_check.sh [file.cu ...]     (default: every csrc/**/*.cu)
# The CPU wheel lacks c10's generated cuda_cmake_macros.h; a one-line stand-in is made in a
# temp dir. Kernels should include c10/cuda headers, not ATen/cuda/CUDAContext.h (which pulls
# cuSPARSE/cuBLAS headers that a bare nvcc install does not have).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TI=$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "include"))')
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
mkdir -p "$shim/c10/cuda/impl"
echo '#pragma once' > "$shim/c10/cuda/impl/cuda_cmake_macros.h"
files=("$@")
if [ ${#files[@]} -eq 0 ]; then mapfile -t files < <(find csrc -name '*.cu' | sort); fi
# One nvcc per (file, arch), as many at a time as there are cores; reports printed in order.
jobs_max=$(nproc 2>/dev/null || echo 2)
n=0
sm90a_objects=()
for f in "${files[@]}"; do
  for arch in 80 90a; do
    log="$shim/$n.log"
    echo "== $f sm_$arch" > "$log"
    ( nvcc -std=c++17 -O3 --expt-relaxed-constexpr -lineinfo -Xptxas -v \
        -gencode "arch=compute_$arch,code=sm_$arch" -c "$f" -o "$shim/$n.o" \
        -I csrc -I "$shim" -I "$TI" -I "$TI/torch/csrc/api/include" \
        -D_GLIBCXX_USE_CXX11_ABI=1 -DAPT_WITH_CUDA=1 -DAPT_WITH_SM90A=1 >> "$log" 2>&1
      echo $? > "$log.rc" ) &
    [ "$arch" = 90a ] && sm90a_objects+=("$shim/$n.o")
    n=$((n + 1))
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  done
done
wait
rc=0
for ((i = 0; i < n; i++)); do
  grep -vE "^ptxas info *: (Compiling|Function properties for)" "$shim/$i.log" || true
  [ "$(cat "$shim/$i.log.rc")" = 0 ] || { echo "nvcc FAILED (see above)"; rc=1; }
done
if [ $rc = 0 ]; then
  st=0
  out=$("$PY" tools/wgmma_sass_check.py "${sm90a_objects[@]}") || st=$?
  echo "$out" | grep -v "^pipelined" || true
  if [ $st = 1 ]; then echo "wgmma pipeline serialized: FAILED"; rc=1; fi
fi
exit $rc
