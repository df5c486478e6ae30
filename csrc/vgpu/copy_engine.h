// CopyEngine: the pager's copies between the device tier and host memory, with per-direction
// byte and time accounting.
//  - CPU "device" tier (no GPU): synchronous copies timed with a steady clock.
//  - CUDA device tier (copy_engine_cuda.cu, compiled with APT_WITH_CUDA): host->device copies
//    run asynchronously on a dedicated stream from torch's pool and return a PendingCopy whose
//    event the consumer's stream waits on (so prefetch overlaps compute); device->host copies
//    run on a second dedicated stream and are synchronous for the caller. Copy times are
//    measured with CUDA events.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <memory>

namespace apt::vgpu {

struct LinkStat {
  int64_t bytes = 0;
  double seconds = 0.0;
  int64_t transfers = 0;
  void add(int64_t b, double s) {
    bytes += b;
    seconds += s;
    ++transfers;
  }
};

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A host->device copy that may still be running.
class PendingCopy {
 public:
  virtual ~PendingCopy() = default;
  virtual void wait_host() = 0;            // block the calling thread until the copy is done
  virtual void wait_current_stream() = 0;  // make the current stream wait for it (no host block)
};

class CopyEngine {
 public:
  virtual ~CopyEngine() = default;
  // A new contiguous tensor on the device tier's device holding `src` (host or device).
  // `*pending` is set when the copy may still be running (src must stay valid until then).
  virtual at::Tensor to_device(const at::Tensor& src, std::shared_ptr<PendingCopy>* pending) = 0;
  // Copies device tensor `src` into host tensor `dst`; returns when the bytes are in `dst`.
  virtual void to_host(const at::Tensor& dst, const at::Tensor& src) = 0;
  // Called before a device-tier tensor is returned to the user (CUDA: record_stream).
  virtual void hand_out(const at::Tensor& t) = 0;
  // Adds the finished copies' bytes and times to `h2d` / `d2h`.
  virtual void collect(LinkStat& h2d, LinkStat& d2h) = 0;
};

std::unique_ptr<CopyEngine> make_copy_engine(const at::Device& device);
#ifdef APT_WITH_CUDA
std::unique_ptr<CopyEngine> make_cuda_copy_engine(const at::Device& device);
// `bytes` of page-locked host memory from cudaHostAlloc as a uint8 CPU tensor (freed with
// cudaFreeHost). Unlike torch's pinned allocator it does not round up to a power of two.
at::Tensor cuda_pinned_bytes(int64_t bytes);
#endif

}  // namespace apt::vgpu
