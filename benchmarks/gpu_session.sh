#!/usr/bin/env bash
# One batched GPU session (device machine): build, GPU tests, benchmarks; everything lands in
# $OUT (logs + one tarball of benchmarks/results and benchmarks/plots).
# Usage: bash benchmarks/gpu_session.sh STAGE[:SECONDS]...
#   stages: ab (two builds A/B in one call: see its line below) build test (all of tests/gpu; APT_TEST_WORKERS pytest-xdist processes where carried) test_fp4 test_gemv test_left_spin test_vgpu test_model test_decode_attention (APT_PYTEST_K='expr' selects their tests), norm_fusion (benchmarks/fp4_norm_fusion.py, APT_NF_ARGS its flags) sanitizer fp4 fp4_triton fp4_triton_crossover (APT_TRITON_DEQUANT_MIN_M pinned each way) fp4_triton_configs (every Triton GEMV / small-M GEMM config, host- and graph-timed; APT_SWEEP_TAG names its JSON, APT_SWEEP_MS its rows of x, APT_SWEEP_GEMV_BASES extra GEMV bases to time, e.g. 16x2048x8x4,8x4096x8x4) fp4_triton_host (the Triton path's eager host time, piece by piece) fp4_quick
#           gemv_sweep (APT_SWEEP_VARIANTS='v1;v2' limits it, APT_SWEEP_MS='1,16' its rows of x, APT_SWEEP_SHAPES='4096x4096,...' its weights, APT_SWEEP_TAG names its JSON) ncu_gemv ncu_gemv_full (Nsight Compute on the GEMV, APT_NCU_M rows of x, default 1) ncu_gemm (on the tiled GEMM) ncu_gemm_full (the same, report, details and per-SASS-line source page kept, the source page also summed as JSON by tools/ncu_source_json.py; every ncu stage on APT_NCU_SHAPE, NxK, default the largest shape) ncu_norm_fusion (Nsight Compute on fp4_norm_fusion.py --profile-once: the plain, composite, fused and handoff GEMVs, in that order, of APT_NCU_PROJ, default gate_up, at APT_NCU_M rows, default 16; APT_NF_ARGS more flags, e.g. --fmt nf4) e2e e2e_decoder decode_attention left_spin left_spin_quick vgpu vgpu_quick vgpu_ssd (the SSD part alone: pager against dd and fio) vvram vvram_quick model (APT_MODEL_ARGS its flags; APT_MODEL_CODE=1 keeps inductor's wrapper modules in $OUT/inductor_code.tgz) prefix_sum lr_sweep (GPT-2-small size; APT_LR_SWEEP_LRS="3e-4 1e-3" and APT_LR_SWEEP_TAG shard it)
#   build: APT_CUDA_ARCHS=90a builds for sm_90a only (90a, not 90: the wgmma GEMM needs it); an earlier call's build/ on a
#   warm machine is kept, so ninja recompiles only what changed (a first call that ran out of its stage limit resumes);
#   the built _C*.so is copied (debug info stripped, gzipped: a file comes back only under 16 MiB) to
#   $OUT so a later call can carry it (gunzip it into apt_ext/ and skip the build stage).
#   each stage's log: $OUT/<stage>.log; SECONDS caps a stage (timeout); a stage failing does not
#   stop the later ones.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/apt_out}
mkdir -p "$OUT" benchmarks/results benchmarks/plots
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=16
# the checkout itself on the path: a call that carries a built _C*.so (no build stage) on a fresh
# machine has no editable install, and scripts under benchmarks/ would not find apt_ext
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=python3
# The device image's default CXX (/opt/gcc) links libstdc++ statically into shared objects; its
# private copy of the iostream/locale code crashed the first formatted error message (SIGSEGV in
# std::ostream::_M_insert<long> inside _C.so). Build with the system compiler instead.
if [ -x /usr/bin/g++ ]; then export CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++; fi
# carried wheels: .whl (any) and .devtools/wheels (tools/fetch_device_tools.sh: pytest-xdist)
wheels=$(ls .whl/*.whl .devtools/wheels/*.whl 2>/dev/null)
if [ -n "$wheels" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $wheels \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# packages carried as tarballs of their installed files (tools/fetch_device_tools.sh: bitsandbytes)
for t in .devtools/site/*.tgz; do
  [ -f "$t" ] || continue
  mkdir -p /tmp/site && tar xzf "$t" -C /tmp/site
  case ":${PYTHONPATH:-}:" in *:/tmp/site:*) ;; *) export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} ;; esac
done
# tools/fetch_device_tools.sh's liburing/libxxhash packages (the pager's io_uring backend) and a
# static fio, when the call carried ".devtools".
if [ -d .devtools/debs ]; then
  for f in .devtools/debs/*.deb; do dpkg -x "$f" /tmp/devroot; done
  export CMAKE_PREFIX_PATH=/tmp/devroot/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
  export LD_LIBRARY_PATH=/tmp/devroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
[ -x .devtools/bin/fio ] && export PATH=$PWD/.devtools/bin:$PATH
# a device build's gzipped _C*.so carried in .devtools/so/ (tools/fetch_device_tools.sh), where
# the call carried no plain one
for gz in .devtools/so/_C*.so.gz; do
  [ -f "$gz" ] || continue
  so=apt_ext/$(basename "$gz" .gz)
  [ -f "$so" ] || gunzip -c "$gz" > "$so"
done
# the card's name as the benchmarks put it in their JSON names (a call returns only about eight
# files, so each stage copies its own JSON, not every one under benchmarks/results)
CARD=$($PY -c 'import torch; print(torch.cuda.get_device_name().replace(" ", "_").replace("/", "_"))' 2>/dev/null || echo unknown)
LIMIT=0
ncu_records() {  # gemm|gemv, how it was profiled: $OUT/<kind>_details.txt as $OUT/fp4_<kind>_ncu_<card>.json (tools/ncu_details_json.py) and $OUT/<kind>_source.csv summed as $OUT/fp4_<kind>_source_<card>.json (tools/ncu_source_json.py)
  local torch_version; torch_version=$($PY -c 'import torch; print(torch.__version__)')
  $PY tools/ncu_details_json.py "$OUT/$1_details.txt" --out "$OUT/fp4_$1_ncu_$CARD.json" --card "${CARD//_/ }" \
    --torch "$torch_version" --command "$2 (benchmarks/gpu_session.sh)"
  $PY tools/ncu_source_json.py "$OUT/$1_source.csv" --out "$OUT/fp4_$1_source_$CARD.json" --card "${CARD//_/ }" \
    --torch "$torch_version" --command "$2 (benchmarks/gpu_session.sh)"
}
stage() {  # name, command...
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$(date +%s)
  if [ "$LIMIT" -gt 0 ]; then set -- timeout "$LIMIT" "$@"; fi
  ( "$@" ) > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc in $(( $(date +%s) - t0 )) s"
  tail -n 25 "$OUT/$name.log"
}
stage_copying_json() {  # name, JSON name pattern, command...: stage, then copy the JSONs it wrote to $OUT
  local name=$1 pattern=$2; shift 2
  touch "/tmp/apt_${name}_start"
  stage "$name" "$@"
  find benchmarks/results -name "$pattern" -newer "/tmp/apt_${name}_start" -exec cp {} "$OUT/" \;
}
sync_dir() {  # SRC DST: make DST's files SRC's, copying only those that differ (new mtimes:
  # ninja then rebuilds what changed, not everything) and removing those SRC lacks
  local src=$1 dst=$2 f
  (cd "$src" && find . -type f) | while read -r f; do
    cmp -s "$src/$f" "$dst/$f" || { mkdir -p "$(dirname "$dst/$f")" && cp "$src/$f" "$dst/$f"; }
  done
  (cd "$dst" && find . -type f) | while read -r f; do [ -e "$src/$f" ] || rm -f "$dst/$f"; done
}
ab_run() {  # the `ab` stage (see its line below)
  [ -d ab_base/csrc ] || { echo "ab: no ab_base/ (tools/ab_prepare.sh REF, carried with the call)"; return 2; }
  [ -n "${APT_AB_CMD:-}" ] || { echo "ab: APT_AB_CMD is empty"; return 2; }
  rm -rf /tmp/ab_tree && mkdir -p /tmp/ab_tree/csrc && sync_dir csrc /tmp/ab_tree/csrc
  cp CMakeLists.txt /tmp/ab_tree/
  local side r so="" src
  for side in base tree; do
    src=$([ $side = base ] && echo ab_base || echo /tmp/ab_tree)
    sync_dir "$src/csrc" csrc
    cmp -s "$src/CMakeLists.txt" CMakeLists.txt || cp "$src/CMakeLists.txt" CMakeLists.txt
    $PY -m pip install -q --no-build-isolation --no-deps -e . > "/tmp/ab_build_$side.log" 2>&1 \
      || { tail -n 30 "/tmp/ab_build_$side.log"; echo "ab: the $side build failed"; return 1; }
    so=$($PY -c 'import apt_ext._C as c; print(c.__file__)') && cp "$so" "/tmp/ab_so_$side" || return 1
    echo "ab: built $side ($( [ $side = base ] && cat ab_base/REF || echo 'the working tree'))"
  done
  rm -rf /tmp/ab_json && mkdir -p /tmp/ab_json
  for r in $(seq 1 "${APT_AB_RUNS:-2}"); do
    for side in base tree; do
      cp "/tmp/ab_so_$side" "$so"
      touch /tmp/ab_start
      echo "=== ab: $side, run $r: $APT_AB_CMD" >> "$OUT/ab_runs.log"
      bash -c "$APT_AB_CMD" >> "$OUT/ab_runs.log" 2>&1
      echo "ab: $side run $r rc=$?"
      if [ -n "${APT_AB_JSON:-}" ]; then
        find benchmarks/results -name "$APT_AB_JSON" -newer /tmp/ab_start | while read -r f; do
          cp "$f" "/tmp/ab_json/ab_${side}_${r}_$(basename "$f")"
        done
      fi
    done
  done
  tar czf "$OUT/ab_json.tgz" -C /tmp/ab_json .  # the tree's build stays installed for later stages
}
for arg in "$@"; do
  s=${arg%%:*}; LIMIT=0; [ "$s" != "$arg" ] && LIMIT=${arg#*:}
  case $s in
    build) stage build $PY -m pip install -v --no-build-isolation --no-deps -e .
      # the slowest translation units (wall seconds from ninja's log): what bounds a parallel build
      nl=$(find build -name .ninja_log | head -1)
      [ -n "$nl" ] && awk -F'\t' 'NR > 1 {printf "%7.1f s  %s\n", ($2 - $1) / 1000, $4}' "$nl" | sort -rn | head -n 8
      so=$($PY -c 'import apt_ext._C as c; print(c.__file__)') && strip --strip-debug -o /tmp/_C.so "$so" \
        && gzip -c /tmp/_C.so > "$OUT/$(basename "$so").gz" ;;
    test)  # with pytest-xdist (carried in .devtools) in APT_TEST_WORKERS processes (default 4) on the one GPU:
      # the cold run's time is mostly Triton and inductor compiling on the CPU
      xd=(); $PY -c 'import xdist' 2>/dev/null && xd=(-n "${APT_TEST_WORKERS:-4}" --dist loadgroup)
      # APT_PYTEST_ARGS: more pytest flags (e.g. "--durations=30 -k kvcache")
      stage test $PY -m pytest -v -p no:cacheprovider "${xd[@]}" ${APT_PYTEST_ARGS:-} tests/gpu ;;
    test_gemv) stage test_gemv $PY -m pytest -q -x -p no:cacheprovider tests/gpu/test_fp4_gemv_cuda.py ${APT_PYTEST_K:+-k "$APT_PYTEST_K"} ;;
    gemv_sweep) stage gemv_sweep $PY benchmarks/fp4_gemv_sweep.py ${APT_SWEEP_VARIANTS:+--variants "$APT_SWEEP_VARIANTS"} \
        ${APT_SWEEP_TAG:+--tag "$APT_SWEEP_TAG"} ${APT_SWEEP_MS:+--ms "$APT_SWEEP_MS"} ${APT_SWEEP_SHAPES:+--shapes "$APT_SWEEP_SHAPES"}
      cp "benchmarks/results/fp4_gemv_sweep_$CARD${APT_SWEEP_TAG:+_$APT_SWEEP_TAG}.json" "$OUT/" 2>/dev/null ;;
    ncu_gemv) stage ncu_gemv ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
        --section MemoryWorkloadAnalysis_Tables --section ComputeWorkloadAnalysis --section InstructionStats \
        --section WarpStateStats --section LaunchStats --section Occupancy -k regex:gemv_tiled \
        $PY benchmarks/fp4_gemv_sweep.py --profile-once --profile-shape "${APT_NCU_SHAPE:-28672x8192}" --ms ${APT_NCU_M:-1} ;;
    ncu_norm_fusion) stage ncu_norm_fusion ncu --clock-control none --nvtx --section SpeedOfLight \
        --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section InstructionStats \
        --section WarpStateStats --section LaunchStats --section Occupancy -k regex:gemv_tiled \
        $PY benchmarks/fp4_norm_fusion.py --profile-once "${APT_NCU_PROJ:-gate_up}" --ms "${APT_NCU_M:-16}" ${APT_NF_ARGS:-} ;;
    ncu_gemm)  # the tiled GEMM (APT_FP4_GEMM, default "1,1,1,2") on the largest shape, APT_NCU_M rows (default 512)
      stage ncu_gemm env APT_FP4_GEMM="${APT_FP4_GEMM:-1,1,1,2}" ncu --clock-control none --set full \
        -k regex:gemm_tiled -c 1 $PY benchmarks/fp4_gemv_sweep.py --profile-once --profile-shape "${APT_NCU_SHAPE:-28672x8192}" --ms ${APT_NCU_M:-512} ;;
    ncu_gemm_full)  # the tiled GEMM (APT_FP4_GEMM, default "1,1,0,2,64,2"), full set with each SASS line's stalls, APT_NCU_M rows (default 64)
      stage ncu_gemm_full env APT_FP4_GEMM="${APT_FP4_GEMM:-1,1,0,2,64,2}" ncu --clock-control none --set full \
        --import-source yes -k regex:gemm_tiled -c 1 -f -o "$OUT/gemm" $PY benchmarks/fp4_gemv_sweep.py --profile-once --profile-shape "${APT_NCU_SHAPE:-28672x8192}" --ms ${APT_NCU_M:-64}
      ncu -i "$OUT/gemm.ncu-rep" --page details > "$OUT/gemm_details.txt" 2>&1
      ncu -i "$OUT/gemm.ncu-rep" --page source --csv --print-source sass > "$OUT/gemm_source.csv" 2>&1
      ncu_records gemm "APT_FP4_GEMM=${APT_FP4_GEMM:-1,1,0,2,64,2} APT_NCU_M=${APT_NCU_M:-64} APT_NCU_SHAPE=${APT_NCU_SHAPE:-28672x8192} ncu_gemm_full" ;;
    ncu_gemv_full)  # full set on the largest shape (tile order), per-SASS-line source page, the SASS
      stage ncu_gemv_full ncu --clock-control none --set full -k regex:gemv_tiled -c 1 -f -o "$OUT/gemv" \
        $PY benchmarks/fp4_gemv_sweep.py --profile-once --profile-shape "${APT_NCU_SHAPE:-28672x8192}" --ms ${APT_NCU_M:-1}
      ncu -i "$OUT/gemv.ncu-rep" --page details > "$OUT/gemv_details.txt" 2>&1
      ncu -i "$OUT/gemv.ncu-rep" --page source --csv --print-source sass > "$OUT/gemv_source.csv" 2>&1
      ncu_records gemv "APT_NCU_M=${APT_NCU_M:-1} APT_NCU_SHAPE=${APT_NCU_SHAPE:-28672x8192} ncu_gemv_full"
      obj=$(find build -name 'fp4_gemv_nvfp4_cuda.cu.o' | head -1)
      [ -n "$obj" ] && cuobjdump -sass "$obj" | $PY -c 'import sys,re; t=sys.stdin.read(); fs=re.split(r"(?=\n\s*Function : )", t); sys.stdout.write("".join(f for f in fs if "E0EN3c108BFloat16ELi1ELi2ELi0ELb0E" in f))' > "$OUT/gemv_nvfp4_bf16_mt1_s2.sass" ;;
    test_fp4|test_left_spin|test_vgpu|test_model|test_decode_attention)
      stage "$s" $PY -m pytest -v -p no:cacheprovider tests/gpu/${s}_*.py ${APT_PYTEST_K:+-k "$APT_PYTEST_K"} ;;
    sanitizer) stage sanitizer compute-sanitizer --tool memcheck --error-exitcode 1 $PY -m pytest -q tests/gpu -k sanitizer ;;
    fp4) # the record (APT_FP4_RECORD_MS its rows of x, APT_FP4_RECORD_TAG its JSON's tag); the Triton
      # fallback (autotuned per shape and M, slow to sweep) is fp4_triton
      stage fp4 $PY benchmarks/fp4_linear.py --methods apt-tiled,apt-cuda,apt-deq+cublas,tinygemm,bnb ${APT_FP4_GPU_TIME:+--gpu-time} \
        ${APT_FP4_RECORD_MS:+--ms "$APT_FP4_RECORD_MS"} ${APT_FP4_RECORD_TAG:+--tag "$APT_FP4_RECORD_TAG"}
      cp "benchmarks/results/fp4_linear_$CARD${APT_FP4_RECORD_TAG:+_$APT_FP4_RECORD_TAG}.json" "$OUT/" 2>/dev/null ;;
    fp4_triton) # APT_FP4_MS rows of x (default 1,4096), APT_FP4_TAG the JSON's tag (default triton), APT_FP4_GPU_TIME=1 adds GPU time
      stage fp4_triton $PY benchmarks/fp4_linear.py --ms "${APT_FP4_MS:-1,4096}" --methods torch-bf16,apt-triton-nvfp4 \
        --tag "${APT_FP4_TAG:-triton}" ${APT_FP4_GPU_TIME:+--gpu-time}
      cp "benchmarks/results/fp4_linear_${CARD}_${APT_FP4_TAG:-triton}.json" "$OUT/" 2>/dev/null ;;
    fp4_triton_crossover) # the Triton GEMM against dequantise + torch.mm at every M above the GEMV's
      stage fp4_triton_gemm env APT_TRITON_DEQUANT_MIN_M=1000000 $PY benchmarks/fp4_linear.py --ms 32,64,128,256,512,1024 \
        --methods torch-bf16,apt-triton-nvfp4 --tag triton_gemm
      stage fp4_triton_deqmm env APT_TRITON_DEQUANT_MIN_M=17 $PY benchmarks/fp4_linear.py --ms 32,64,128,256,512,1024,4096 \
        --methods torch-bf16,apt-triton-nvfp4 --tag triton_deqmm
      cp "benchmarks/results/fp4_linear_${CARD}_triton_gemm.json" "benchmarks/results/fp4_linear_${CARD}_triton_deqmm.json" "$OUT/" 2>/dev/null ;;
    fp4_triton_configs) stage fp4_triton_configs $PY benchmarks/fp4_triton_configs.py ${APT_SWEEP_TAG:+--tag "$APT_SWEEP_TAG"} \
        ${APT_SWEEP_MS:+--ms "$APT_SWEEP_MS"} ${APT_SWEEP_GEMV_BASES:+--gemv-bases "$APT_SWEEP_GEMV_BASES"}
      cp "benchmarks/results/fp4_triton_configs_$CARD${APT_SWEEP_TAG:+_$APT_SWEEP_TAG}.json" "$OUT/" 2>/dev/null ;;
    fp4_triton_host) stage fp4_triton_host env APT_FORCE_TRITON=1 $PY benchmarks/fp4_triton_host.py
      cp "benchmarks/results/fp4_triton_host_$CARD.json" "$OUT/" 2>/dev/null ;;
    fp4_quick) stage fp4_quick $PY benchmarks/fp4_linear.py --quick ;;
    e2e)  # APT_E2E_PROFILE=1: the FP4 forward's top GPU kernels; APT_E2E_TAG: the JSON's suffix; APT_E2E_FUSED=1: q/k/v as one Linear
      stage_copying_json e2e "e2e_encoder_*.json" $PY benchmarks/e2e_encoder.py ${APT_E2E_PROFILE:+--profile} ${APT_E2E_TAG:+--tag "$APT_E2E_TAG"} ${APT_E2E_FUSED:+--fused-qkv} ;;
    e2e_decoder)  # APT_E2E_COMPILE=1: steps compiled too; APT_E2E_FUSED=1: fused q/k/v and gate/up (APT_E2E_SWIGLU=composite: its SwiGLU unfused); APT_E2E_BATCHES=1,8: its batches; APT_E2E_ITERS: timed steps per case (default 50; eager flex attention takes about 0.18 s a step); APT_E2E_ONE_COPY=1: FP4Linear keeps only its tiled copy; APT_E2E_ATTENTION=sdpa, matmul (grouped_attention), flex or apt: the attention (default: the script's, apt_kvcache); APT_E2E_PROFILE=1: top kernels of the replayed step; APT_E2E_FUSE_NORMS=1: norms and residual adds inside the nvfp4 GEMVs (APT_E2E_SEPARATE_MLP_NORM=1: but the MLP's norm on its own; APT_E2E_NORM_HANDOFF=1: each norm takes its sums of squares from the GEMV before it)
      stage_copying_json e2e_decoder "e2e_decoder_*.json" $PY benchmarks/e2e_decoder.py ${APT_E2E_COMPILE:+--compile} ${APT_E2E_FUSED:+--fused} ${APT_E2E_ONE_COPY:+--one-copy} ${APT_E2E_ATTENTION:+--attention "$APT_E2E_ATTENTION"} ${APT_E2E_SWIGLU:+--swiglu "$APT_E2E_SWIGLU"} ${APT_E2E_BATCHES:+--batches "$APT_E2E_BATCHES"} ${APT_E2E_ITERS:+--iters "$APT_E2E_ITERS"} ${APT_E2E_PROFILE:+--profile} ${APT_E2E_FUSE_NORMS:+--fuse-norms} ${APT_E2E_SEPARATE_MLP_NORM:+--separate-mlp-norm} ${APT_E2E_NORM_HANDOFF:+--norm-handoff} ;;
    decode_attention) stage_copying_json decode_attention "decode_attention_*.json" $PY benchmarks/decode_attention.py ${APT_DA_ARGS:-} ;;  # APT_DA_ARGS: its flags (e.g. "--sweep", "--quick")
    norm_fusion) stage_copying_json norm_fusion "fp4_norm_fusion_*.json" $PY benchmarks/fp4_norm_fusion.py ${APT_NF_ARGS:-} ;;  # APT_NF_ARGS: its flags (e.g. "--ms 1")
    left_spin) stage left_spin $PY benchmarks/left_spin.py ;;
    left_spin_quick) stage left_spin_quick $PY benchmarks/left_spin.py --quick ;;
    vgpu) stage vgpu $PY benchmarks/vgpu.py ;;
    vgpu_quick) stage vgpu_quick $PY benchmarks/vgpu.py --quick ;;
    vgpu_ssd) stage vgpu_ssd $PY benchmarks/vgpu.py --ssd-only
      cp "$(ls -t benchmarks/results/vgpu_ssd_*.json | head -n 1)" "$OUT/" 2>/dev/null ;;  # this run's, not the CPU one
    vvram) stage vvram $PY benchmarks/virtual_vram.py ${APT_VVRAM_TOKENS:+--new-tokens $APT_VVRAM_TOKENS} ${APT_VVRAM_ARGS:-} ;;  # APT_VVRAM_TOKENS: generated tokens per run (default 16); APT_VVRAM_ARGS: more flags (e.g. "--compare-lru --skip accelerate,ssd")
    vvram_quick) stage vvram_quick $PY benchmarks/virtual_vram.py --quick ;;
    model)  # e.g. APT_MODEL_ARGS="--compiled-only --variants plain,left-spin --interleave 6 --tag ab"; APT_MODEL_CODE=1
      # also keeps inductor's wrapper modules (a fresh cache: every graph compiled in this run) in
      # $OUT/inductor_code.tgz, for tools/inductor_kernel_sources.py to name what each profiled kernel computes
      if [ -n "${APT_MODEL_CODE:-}" ]; then rm -rf /tmp/apt_inductor_code; export TORCHINDUCTOR_CACHE_DIR=/tmp/apt_inductor_code; fi
      stage model $PY benchmarks/model_throughput.py --profile ${APT_MODEL_ARGS:-}
      f=$(ls -t benchmarks/results/model_throughput*.json 2>/dev/null | head -n 1); [ -n "$f" ] && cp "$f" "$OUT/"
      if [ -n "${APT_MODEL_CODE:-}" ]; then
        (cd /tmp/apt_inductor_code && grep -rl --include='*.py' 'def call(' . | tar czf "$OUT/inductor_code.tgz" -T -)
        unset TORCHINDUCTOR_CACHE_DIR
      fi ;;
    prefix_sum) stage prefix_sum $PY benchmarks/prefix_sum.py
      cp "benchmarks/results/prefix_sum_$CARD.json" "$OUT/" 2>/dev/null ;;
    lr_sweep) stage lr_sweep $PY benchmarks/left_spin_training.py --size gpt2-small ${APT_LR_SWEEP_LRS:+--lrs $APT_LR_SWEEP_LRS} \
        ${APT_LR_SWEEP_TAG:+--tag "$APT_LR_SWEEP_TAG"} ;;
    ab)  # A/B of two builds in one call: ab_base/ (tools/ab_prepare.sh REF, carried) against the working tree,
      # each built once (APT_CUDA_ARCHS as for build; only the sources that differ recompile) and its _C
      # swapped in before each run of APT_AB_CMD (a shell command), base then tree, APT_AB_RUNS times (default
      # 2); their output in $OUT/ab_runs.log, the JSONs they wrote that match APT_AB_JSON (a file name pattern
      # under benchmarks/results) in $OUT/ab_json.tgz as ab_<base|tree>_<run>_<name>
      stage ab env OUT="$OUT" PY="$PY" APT_AB_CMD="${APT_AB_CMD:-}" bash -c "$(declare -f sync_dir ab_run); ab_run" ;;
    *) echo "unknown stage $s"; exit 2 ;;
  esac
done
tar czf "$OUT/results.tgz" benchmarks/results benchmarks/plots 2>/dev/null
$PY -m apt_ext.cli.main info > "$OUT/info.txt" 2>&1
