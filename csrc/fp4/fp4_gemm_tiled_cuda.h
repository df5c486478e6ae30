// The tiled-layout FP4 GEMM (fp4_gemm_tiled_cuda.cu): 32 or 64 rows of bfloat16 x per block,
// staged through shared memory, for nvfp4 / mxfp4 weights. fp4_linear_tiled (fp4_gemv_cuda.cu)
// calls it instead of the GEMV where choose_gemm says (the measured routes below, or
// APT_FP4_GEMM="min_rows[,k_parts[,splits[,tiles_per_warp[,rows[,mma[,j_group[,workers]]]]]]]" for tuning sweeps;
// "0": never).
#pragma once
#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <optional>

#include "fp4/fp4_format.h"
#include "fp4/fp4_tiled_decode_cuda.h"

namespace apt::fp4::cuda {

// Where the GEMM is the default (no APT_FP4_GEMM): from kGemmDefaultMinRows rows of x on weights
// of at least kGemmDefaultMinN rows. H200 sweep round 11b
// (benchmarks/results/fp4_gemv_sweep_NVIDIA_H200_round11b.json, nvfp4, bf16 x, the GEMM with one
// K part and blocks along K chosen per shape): at 128 rows of x it took 72.4 / 219.2 us on 14336 x
// 4096 / 28672 x 8192 against the GEMV's 86.2 / 287.9 us, but 38.3 / 90.4 us on 4096 x 4096 /
// 4096 x 14336 against 27.1 / 77.4; at 64 rows it was ahead only on 28672 x 8192. 65 to 127 rows
// were not measured.
constexpr int64_t kGemmDefaultMinRows = 65;
constexpr int64_t kGemmDefaultMinN = 8192;

// Where the wgmma GEMM can run (an sm_90a build on a compute capability 9.0 GPU), its transposing
// form (GemmProduct::kWgmmaTranspose) is the default in two more places, by the H100 sweeps of the
// twenty-sixth session (benchmarks/results/fp4_gemv_sweep_NVIDIA_H100_80GB_HBM3_round25.json at
// 24-64 rows and _round25a.json at 32, 64 and 128 rows; nvfp4, bf16 x, do_bench medians):
//  * weights of at least kWgmmaWideMinN rows, from kWgmmaMinRows rows of x: the 2 x 32 tile up to
//    32 rows, 2 x 64 above. On 28672 x 8192: 87.3 / 88.8 us at 24 / 32 rows against the GEMV's
//    102.9 / 103.5, and 117.1-118.9 us at 40-64 rows against 165.4-172.1. On 14336 x 4096 the
//    two were level at 40-64 rows (2 x 64: 51.3-52.1 us, GEMV 46.8-51.9) and the GEMV ahead below,
//    so the bound lies between 14336 and 28672 rows (none measured in between); 17-23 rows not
//    measured;
//  * from kGemmDefaultMinRows rows on weights of kGemmDefaultMinN rows, 2 x 64 instead of the
//    mma.sync GEMM: at 128 rows 67.4 / 203.5 us against 75.3 / 233.0 on 14336 x 4096 / 28672 x
//    8192; at 256 / 512 / 4096 rows (twenty-seventh session, _round26b.json) 107.2 / 206.7 /
//    1425.6 and 396.1 / 682.6 / 5278.6 us against mma.sync's 123.2 / 236.0 / 1617.4 and 457.7 /
//    785.3 / 6072.9;
//  * from kWgmmaAllMinRows rows on every weight, 2 x 64 instead of the GEMV (_round26b.json): on
//    4096 x 14336 130.8 / 186.4 / 1340.2 us at 256 / 512 / 4096 rows against 147.8 / 287.7 /
//    2923.2, on 4096 x 4096 51.8 / 68.0 / 412.5 against 50.1 / 88.3 / 791.4 (level at 256). On
//    weights under 8192 rows, 129 to 255 rows were not measured and keep the GEMV.
// Stream-K (splits -1) replaces the blocks along K chosen per shape on every one of these wgmma
// routes, and takes two more, by the sweeps of the twenty-eighth session (nvfp4, bf16 x, do_bench
// medians; H200: benchmarks/results/fp4_gemv_sweep_NVIDIA_H200_round27.json at 24-256 rows; H100:
// _H100_80GB_HBM3_round27c.json at 40-128 rows, _round27d.json at 120-136):
//  * where the routes above ran the wgmma GEMM it was faster or level. H200: on 28672 x 8192 73.5 /
//    101.0 / 183.8 / 359.4 us at 32 / 64 / 128 / 256 rows (2 x 32 up to 32 rows) against 82.1 /
//    109.9 / 189.5 / 369.2; on 4096 x 14336 and 4096 x 4096 at 256 rows 100.9 / 41.7 against 121.0
//    / 48.5; on 14336 x 4096 at 128 / 256 rows 60.8 / 103.6 against 64.4 / 101.6 (level). H100 at
//    128 rows: 62.5 / 189.4 us on 14336 x 4096 / 28672 x 8192 against 66.1 / 191.1;
//  * (this and the next since taken by the bulk 1 x 128, below) from 40 rows on weights of
//    kGemmDefaultMinN rows: 14336 x 4096 at 40 / 48 / 56 rows 41.0 / 40.9 / 41.2 us against the
//    GEMV's 48.0 / 52.0 / 51.3 (H100), at 64 rows 40.4 against 50.4 (H200); 33-39 rows not measured;
//  * from 96 rows where K is at least kStreamKDeepMinK: 4096 x 14336 at 96 rows
//    63.2 us against the GEMV's 70.9 (H100), at 128 rows 61.8 against 76.6 (H200); at 40-64 rows
//    the GEMV led (43.1-45.4 against 46.1-46.7 us, H100); 65-95 rows not measured. Not at K 4096:
//    4096 x 4096 at 96 / 128 rows 32.0 / 32.3 against the GEMV's 25.9 / 27.6 (H100); K between
//    4096 and 14336 not measured.
// The 2 x 64 tile of these routes decodes two 16-column slices per wgmma commit group (j_group 2):
// level with one or 1-2% faster wherever it runs, by the H100 sweep of the twenty-ninth session
// (_H100_80GB_HBM3_round28.json): on 28672 x 8192 103.8 / 186.3 / 350.8 us at 64 / 128 / 256 rows
// against 104.9 / 188.8 / 358.0, on 14336 x 4096 at 256 rows 104.5 against 106.5.
// The 2 x 128 tile (256 weight rows x 128 rows of x per block: each weight word decoded once for 128
// rows, stream-K, one slice per group) replaces 2 x 64 on three of these routes, by the H100 sweeps
// of the thirty-fourth session (nvfp4, bf16 x, do_bench medians; _H100_80GB_HBM3_round34.json at
// 64-512 rows, _round34b.json at 96-1024, _round34c.json at 64-96):
//  * from kWide128MinRows rows on weights of kGemmDefaultMinN rows (above 64 rows 2 x 64 needs two
//    blocks of x, 2 x 128 one): on 28672 x 8192 143.9-146.5 us at 72-96 rows against 180.4-181.2 at
//    72-88 (round34c), 147.6 / 151.2 / 273.8 / 534.4 at 96 / 128 / 256 / 512 rows against 183.7 /
//    187.7 / 353.0 / 725.2 (bf16 cuBLAS 174.7 / 172.0 / 204.7 / 356.0), on 14336 x 4096 56.6-58.3 us
//    at 72-88 rows against 60.1-61.4, 59.6 / 60.1 / 92.3 / 159.4 at 96 / 128 / 256 / 512 against
//    62.0 / 63.0 / 106.4 / 194.4; at 192 rows (two blocks of x, the second half empty) level or 4%
//    slower (267.1 against 269.8, 89.9 against 86.3); at 64 rows slower (144.1 against 103.5 us on
//    28672 x 8192, round34c); 65-71 rows not measured;
//  * from kWide128DeepMinRows rows where K is at least kStreamKDeepMinK: 4096 x 14336 at 256 / 512
//    rows 92.2 / 150.2 us against 103.3 / 183.6 (at 96-192 rows slower: 69.7-91.3 against
//    62.9-83.8);
//  * from kWide128AllMinRows rows on every weight: 4096 x 4096 at 512 / 1024 rows 63.1 / 101.2 us
//    against 64.9 / 116.9 (at 256 / 384 slower: 48.4 / 56.0 against 42.0 / 55.1).
// The bulk product (GemmProduct::kWgmmaBulk, two slices per group) replaces the transposing one on
// the 2 x 128 routes from 128 rows, and from kWide128MinRows on weights of kWgmmaWideMinN rows (below
// 128 rows the bulk 1 x 128 now serves the others, see below), and takes the 33-64 row route on
// those weights (2 x 64), by the sweeps of the
// thirty-fifth session (nvfp4, bf16 x, do_bench medians; H100: _H100_80GB_HBM3_round35b.json at
// 33-1024 rows; H200: _H200_round35.json at 64-512; the record
// fp4_linear_NVIDIA_H100_80GB_HBM3_s35_routes.json, host-timed, 63.7 against 58.0 us on 14336 x 4096 at
// 96 rows; 97-127 rows not measured):
//  * 2 x 128 on 28672 x 8192: 129.5 / 126.1 / 229.3 / 428.4 / 841.5 us at 96 / 128 / 256 / 512 / 1024
//    rows against the transposing form's 146.3 / 149.5 / 275.7 / 544.7 / 1081.0 (H100; H200 at 128
//    rows 120.6 against 145.8); on 14336 x 4096 56.8 / 81.9 / 136.5 at 128 / 256 / 512 rows against
//    59.5 / 91.0 / 157.6, but 62.0 against 59.0 at 96 (H100; H200 58.2 against 56.3); level on the
//    deep and all-weights routes (4096 x 14336 at 256-1024 rows 93.2 / 120.9 / 147.0 / 274.0 against
//    91.9 / 121.2 / 149.6 / 273.4; 4096 x 4096 at 512 / 1024 rows 62.7 / 98.8 against 62.2 / 100.2);
//  * 2 x 64 on 28672 x 8192 at 64 rows 96.5 us against 103.8 (H100; H200 91.3 against 98.9), level at
//    33 / 48 rows (99.9 / 101.0 against 100.2 / 101.5); not on 14336 x 4096 (43.4 against 41.5 at 64
//    rows) nor 4096 x 14336 (50.0 against 44.3).
// The bulk 1 x 128 tile (128 weight rows x 128 rows of x per block: twice the 2 x 128's output
// blocks) takes kBulk1x128MinRows-kBulk1x128MaxRows rows on weights of fewer than kWgmmaWideMinN rows
// that have kGemmDefaultMinN rows or K of kStreamKDeepMinK (there the transposing 2 x 128, the
// transposing 2 x 64 or the GEMV served), by the H100 sweep of the thirty-sixth session
// (_H100_80GB_HBM3_round36c.json, x rearranged by one kernel, pack_x_core_kernel): 14336 x 4096 at
// 80 / 96 / 112 / 128 rows 45.5 / 45.8 / 46.4 / 47.2 us against the transposing 2 x 128's 56.0 /
// 56.9 / 57.7 / 58.1 and the bulk 2 x 128's 49.3 / 50.9 / 51.3 / 51.5; 4096 x 14336 48.5 / 49.0 /
// 49.3 / 49.8 against the GEMV's 75.9 at 80 rows and the transposing 2 x 64's 60.7 / 61.5 / 62.3 at
// 96-128. Not at 64 rows (45.2 against 41.0, 48.1 against 44.5: the GEMV and 2 x 64 lead; 65-79 rows
// not measured), not above 128 (14336 x 4096 at 144 rows 74.8 against the bulk 2 x 128's 73.0; 4096 x
// 14336 73.9 against 2 x 64's 81.1, 129-143 and above 144 not measured), not on 4096 x 4096 (the
// GEMV's 25.0 / 27.2 against 28.2 / 28.9 at 96 / 128), not on 28672 x 8192 (129.2 against the bulk 2 x
// 128's 120.0 at 128). So the transposing 2 x 128 serves no route now (kept for APT_FP4_GEMM).
// Since the thirty-seventh session the 2 x 128 and 1 x 128 routes run stream-K with whole workers
// per output block (kStreamKWhole: where the output blocks fit the slots, each block's steps lie in
// one output block), and the 1 x 128 serves more rows and weights, by the H100 sweeps
// _H100_80GB_HBM3_round37.json (80-128 rows), _round37b.json (64-160) and _round37c.json (40, 56,
// 192, 256) (nvfp4, bf16 x, do_bench medians, us):
//  * whole workers against kStreamK, same tile: the 1 x 128 on 14336 x 4096 at 80 / 96 / 128 rows
//    39.8 / 40.1 / 41.5 against 45.5 / 46.3 / 47.6, on 4096 x 14336 44.7 / 45.3 / 46.8 against 48.3 /
//    48.9 / 50.0, on 4096 x 4096 25.3 / 25.6 / 26.3 against 27.8 / 28.1 / 28.7; the 2 x 128 on 28672 x
//    8192 at 96 / 128 rows 107.2 / 109.9 against 114.9 / 117.3, on 14336 x 4096 at 160 / 192 / 256
//    rows 60.4 / 60.0 / 62.0 against 72.8 / 73.7 / 75.4; where the output blocks outnumber the slots
//    (28672 x 8192 from 129 rows) the two are one launch;
//  * the 1 x 128 up to kBulk1x128TallMaxRows rows on weights of kGemmDefaultMinN-16383 rows (at 160
//    rows 75.8 against the 2 x 128's 60.4);
//  * on other weights of kBulk1x128MinFeatures rows and columns, or of K kStreamKDeepMinK, at
//    kBulk1x128MinRows-kBulk1x128MaxRows rows: 4096 x 4096 at 80 / 128 / 160 / 192 / 256 rows 25.3 /
//    26.3 / 31.6 / 31.9 / 32.6 against the GEMV's 30.0 / 28.8 / 43.8 / 48.9 and the transposing 2 x
//    64's 41.5 at 256 (level at 96: 25.6 against 25.2; at 64 the GEMV leads, 18.7 against 25.2;
//    65-79 rows not measured); 4096 x 14336 at 160 / 192 / 256 rows 68.7 / 68.2 / 71.1 against the
//    transposing 2 x 64's 81.6 / 82.6 and the 2 x 128's 79.0 (level with the GEMV at 56 / 64 rows:
//    43.7 / 44.9 against 44.2 / 44.9; at 40 the GEMV leads, 42.0 against 43.5).
// Since the thirty-eighth session the bulk 2 x 64 with whole workers takes kBulk2x64MinRows-
// kBulk2x64MaxRows rows on weights of kGemmDefaultMinN rows or K of kStreamKDeepMinK (33-64 on
// weights of kWgmmaWideMinN rows, where its output blocks outnumber the slots: whole workers and
// kStreamK are one launch), by the H100 sweeps _H100_80GB_HBM3_round38.json (40 / 48 / 64 rows),
// _round38b.json (24 / 32 / 80 / 96 / 128) and _round38c.json (33 / 36): 14336 x 4096 at 33 / 36 /
// 40 / 48 / 64 rows 34.2 / 34.2 / 34.4 / 34.5 / 35.3 us against the GEMV's 44.7 / 45.7 and the 1 x
// 128's 38.5 / 38.7 / 38.8; 4096 x 14336 37.2 / 37.6 / 37.4 / 37.6 / 38.6 against the GEMV's 44.3 /
// 44.1 / 42.0 / 42.1 / 44.8. Not at 32 rows (33.8 against 32.5, 37.2 against 31.3), not from 80 (47.0
// against the 1 x 128's 39.6 on 14336 x 4096), not on 4096 x 4096 (24.7 against the GEMV's 18.2 at
// 40). The route itself at 32 / 33 / 36 / 40 rows: _round38d.json.
// Since the thirty-ninth session the 2 x 64 on weights of kGemmDefaultMinN to kWgmmaWideMinN - 1 rows
// and K below kStreamKDeepMinK, and the 1 x 128 on weights of fewer rows with K below
// kStreamKDeepMinK or (above kBulk1x128TallMaxRows rows) of K kStreamKDeepMinK or more, add their
// workers' sums in thread-block clusters (kStreamKCluster) of at most kClusterRouteWorkers blocks, by
// the H100 sweeps _H100_80GB_HBM3_round39.json (80 / 128 / 256 rows), _round39b.json (96-256) and
// _round39c.json (33-64): 4096 x 4096 at 96 / 128 / 192 / 256 rows 23.8 / 24.1 / 28.6 / 29.0 us
// against the global gather's 25.5 / 26.2 / 31.9 / 32.3 (4 workers per output block up to 128 rows,
// 2 above); 4096 x 14336 at 192 / 256 66.3 / 67.6 against 69.0 / 70.3; 14336 x 4096 at 33 / 48 / 64
// rows (2 workers) 31.9 / 32.3 / 32.9 against 34.2 / 34.7 / 35.4. Clusters of 4 lose (4096 x 4096 at
// 80 / 128 rows 37.5 / 37.8, as slow as one worker per output block: unsourced, 32 clusters of 4 of
// these blocks seem not to fit the GPU at once), and so do clusters of 3 where the steps are many
// (4096 x 14336 at 96 / 128: 48.5 / 49.2 against 4 workers' 45.3 / 46.5) or one worker serves an
// output block (its sums all pass through shared memory: 14336 x 4096 at 96 / 128 rows 41.0 / 42.0
// against 40.1 / 41.4; 28672 x 8192 at 33 / 48 / 64 86.7 / 87.9 / 90.2 against 84.7 / 86.2 / 88.1).
// The routes without wgmma (mma.sync) stay as measured on their own.
// apt_ext.nn.FP4Linear sends calls above 128 rows (on Hopper with a weight of 4096 rows and columns:
// above 256, of 8192 rows or columns: above 384, of 8192 rows: above 512) to dequantise + cuBLAS
// (fp4_linear), so the routes above serve callers of the tiled op itself.
constexpr int64_t kWgmmaMinRows = 24;
constexpr int64_t kWgmmaWideMinN = 16384;
constexpr int64_t kWgmmaAllMinRows = 256;
constexpr int64_t kStreamKDeepMinK = 8192;
constexpr int64_t kWide128MinRows = 65;
constexpr int64_t kWide128DeepMinRows = 256;
constexpr int64_t kWide128AllMinRows = 512;
constexpr int64_t kBulk2x64MinRows = 33;
constexpr int64_t kBulk2x64MaxRows = 64;
constexpr int64_t kBulk1x128TallMaxRows = 128;
constexpr int64_t kBulk1x128MinRows = 65;
constexpr int64_t kBulk1x128MaxRows = 256;
constexpr int64_t kBulk1x128MinFeatures = 4096;

// Whether the GEMM takes this format and x dtype (nvfp4 / mxfp4, bfloat16 x).
bool gemm_tiled_supported(Format f, at::ScalarType x_dtype);

// The kind of product of the GEMM's warp tile (APT_FP4_GEMM's sixth field; the wgmma kinds need an
// sm_90a build, a compute capability 9.0 GPU and 1 or 2 K parts).
enum class GemmProduct : int {
  kMmaSync = 0,         // mma.sync m16n8k16; x rows at a padded pitch, copied by 16-byte chunks
  kWgmmaWordCopy = 1,   // wgmma; x copied word by word (4 bytes) straight into wgmma's core matrices
  kWgmmaTranspose = 2,  // wgmma; x copied by 16-byte chunks into a plain ring, then transposed into
                        // the core matrices in shared memory
  kWgmmaBulk = 3,       // wgmma; x rearranged into core-matrix order once per call (global memory),
                        // each step's block of it copied by one bulk copy (TMA) per block
};
// One launch configuration of the GEMM: its K parts per block (1, 2 or 4), its blocks along K (0:
// enough to fill the GPU; kStreamK, kStreamKWhole or kStreamKCluster: stream-K, one K part only), its tiles per
// warp and rows of x per block (a warp tile built for the kind of product: mma.sync 2 x 64, 4 x 32,
// 2 x 32, 1 x 64; wgmma 2 x 32, 1 x 64, 2 x 64, 1 x 128, with the transposing product also 2 x 128,
// and with word copies also 1 or 2 x 8 or 16; the bulk product 2 x 64, 2 x 128 and 1 x 128 only)
// and the kind of product.
// GemmTiledConfig::splits for stream-K (APT_FP4_GEMM's -1, -2 and -3): kStreamK, one worker block per
// slot (every multiprocessor's blocks), each taking an even share of all output blocks' K steps;
// kStreamKWhole, where the output blocks fit the slots, a whole number of workers per output block,
// so that each worker's steps lie in one output block (one pipeline fill and at most one gather
// each) and the slots left over stay idle; else the same as kStreamK. kStreamKCluster (since the
// thirty-eighth session; routed since the thirty-ninth; the bulk product with two slices per group only):
// whole workers per output block in every case (as many as fit the slots, at least one, at most
// kMaxClusterWorkers), each output block's workers one thread-block cluster that adds their sums
// through distributed shared memory instead of global memory, each block storing part of the tile;
// where that leaves one worker per output block, the plain stream-K kernel, which stores its sums
// directly (since the fortieth session: the cluster form measured 0.6-2 us slower there, above);
// and above 2 workers only as many as let every cluster be resident at once
// (cudaOccupancyMaxActiveClusters; since the fortieth session: clusters that do not all fit run in
// two waves, as slow as one worker, above).
constexpr int64_t kStreamK = -1;
constexpr int64_t kStreamKWhole = -2;
constexpr int64_t kStreamKCluster = -3;
constexpr int64_t kMaxClusterWorkers = 8;  // the portable cluster size
constexpr int kClusterRouteWorkers = 3;   // the routes' cluster size limit (measured above)

struct GemmTiledConfig {
  int k_parts;
  int64_t splits;  // blocks along K (0: chosen per shape), or kStreamK / kStreamKWhole / kStreamKCluster
  int tiles_per_warp;
  int rows_per_block;   // rows of x per block (8 per mma n8 block): 32, 64 or (wgmma) 8, 16, 128
  GemmProduct product;
  int j_group = 1;      // wgmma: 16-column slices decoded before one commit group (1; with the
                        // transposing product also 2 for 2 x 32, 2 x 64, 1 x 128 and 2 x 128, with
                        // the bulk product for both of its tiles)
  int max_workers = 0;  // kStreamKWhole and kStreamKCluster: the most workers per output block (0:
                        // as many as fit the slots, at most half the K steps); the cluster
                        // routes set kClusterRouteWorkers
};

// The GEMM fp4_linear_tiled launches for m rows of x on a weight of n rows and k columns (format f,
// x of x_dtype) on CUDA device `device`, or nullopt for the GEMV. APT_FP4_GEMM (read at each call;
// tuning sweeps) = "min_rows[,k_parts[,splits[,tiles_per_warp[,rows[,mma[,j_group[,workers]]]]]]]" replaces
// the default routes above: the GEMM from min_rows rows on any weight (0: never), one K part,
// blocks along K chosen per shape, 2 tiles per warp, rows 0 meaning 64 below 4 tiles per warp,
// else 32, mma.sync, one wgmma slice per group and (splits -2) as many workers per output block as
// fit unless the last fields say otherwise.
std::optional<GemmTiledConfig> choose_gemm(int64_t m, int64_t n, int64_t k, Format f, at::ScalarType x_dtype,
                                          int device);

// Launches the GEMM on `stream` for `args` as fp4_linear_tiled fills them (out [m, n] bfloat16) and
// `x`, the tensor args.x points at ([m, steps * 128] bfloat16, contiguous: padded to whole steps,
// 16-byte aligned); sets the block shape fields itself, allocates the splits' workspace on x's
// device and, for the bulk product, x's rearranged copy.
void launch_gemm_tiled(TiledLinearArgs args, Format f, bool gelu, const GemmTiledConfig& cfg, const at::Tensor& x,
                       cudaStream_t stream);

}  // namespace apt::fp4::cuda
