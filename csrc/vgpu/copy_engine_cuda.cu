// CUDA CopyEngine: dedicated host->device and device->host streams, events for ordering and
// timing (see copy_engine.h).
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <deque>

#include "vgpu/copy_engine.h"

namespace apt::vgpu {
namespace {

class CudaPending final : public PendingCopy {
 public:
  CudaPending(std::shared_ptr<c10::cuda::CUDAEvent> done, at::Device device) : done_(std::move(done)), device_(device) {}
  void wait_host() override { done_->synchronize(); }
  void wait_current_stream() override { done_->block(c10::cuda::getCurrentCUDAStream(device_.index())); }

 private:
  std::shared_ptr<c10::cuda::CUDAEvent> done_;
  at::Device device_;
};

class CudaCopyEngine final : public CopyEngine {
 public:
  explicit CudaCopyEngine(const at::Device& device)
      : device_(device.has_index() ? device : at::Device(at::kCUDA, c10::cuda::current_device())),
        h2d_stream_(c10::cuda::getStreamFromPool(false, device_.index())),
        d2h_stream_(c10::cuda::getStreamFromPool(false, device_.index())) {}

  at::Tensor to_device(const at::Tensor& src, std::shared_ptr<PendingCopy>* pending) override {
    c10::cuda::CUDAGuard device_guard(device_);
    if (src.is_cuda()) {  // written on the caller's stream: order the copy after it
      c10::cuda::CUDAEvent produced;
      produced.record(c10::cuda::getCurrentCUDAStream(src.device().index()));
      produced.block(h2d_stream_);
    }
    c10::cuda::CUDAStreamGuard stream_guard(h2d_stream_);
    auto start = std::make_shared<c10::cuda::CUDAEvent>(cudaEventDefault);
    auto done = std::make_shared<c10::cuda::CUDAEvent>(cudaEventDefault);
    // Allocated on the copy stream so the caching allocator orders reuse after the copy.
    at::Tensor dst = at::empty(src.sizes(), src.options().device(device_).pinned_memory(false));
    start->record(h2d_stream_);
    dst.copy_(src, /*non_blocking=*/true);
    done->record(h2d_stream_);
    drain();
    timed_.push_back({start, done, int64_t(src.nbytes())});
    *pending = std::make_shared<CudaPending>(done, device_);
    return dst;
  }

  void to_host(const at::Tensor& dst, const at::Tensor& src) override {
    c10::cuda::CUDAGuard device_guard(device_);
    c10::cuda::CUDAEvent produced;
    produced.record(c10::cuda::getCurrentCUDAStream(device_.index()));
    produced.block(d2h_stream_);
    c10::cuda::CUDAStreamGuard stream_guard(d2h_stream_);
    auto start = std::make_shared<c10::cuda::CUDAEvent>(cudaEventDefault);
    auto done = std::make_shared<c10::cuda::CUDAEvent>(cudaEventDefault);
    start->record(d2h_stream_);
    dst.copy_(src, /*non_blocking=*/true);
    done->record(d2h_stream_);
    done->synchronize();
    d2h_.add(int64_t(src.nbytes()), double(start->elapsed_time(*done)) / 1e3);
  }

  void hand_out(const at::Tensor& t) override {
    t.record_stream(c10::cuda::getCurrentCUDAStream(device_.index()));
  }

  void collect(LinkStat& h2d, LinkStat& d2h) override {
    drain();
    h2d.bytes += h2d_.bytes, h2d.seconds += h2d_.seconds, h2d.transfers += h2d_.transfers;
    d2h.bytes += d2h_.bytes, d2h.seconds += d2h_.seconds, d2h.transfers += d2h_.transfers;
    h2d_ = LinkStat{};
    d2h_ = LinkStat{};
  }

 private:
  struct Timed {
    std::shared_ptr<c10::cuda::CUDAEvent> start, done;
    int64_t bytes;
  };
  // Moves finished host->device copies (in stream order) into h2d_.
  void drain() {
    while (!timed_.empty() && timed_.front().done->query()) {
      const Timed& t = timed_.front();
      h2d_.add(t.bytes, double(t.start->elapsed_time(*t.done)) / 1e3);
      timed_.pop_front();
    }
  }
  at::Device device_;
  c10::cuda::CUDAStream h2d_stream_, d2h_stream_;
  std::deque<Timed> timed_;
  LinkStat h2d_, d2h_;
};

}  // namespace

std::unique_ptr<CopyEngine> make_cuda_copy_engine(const at::Device& device) {
  return std::make_unique<CudaCopyEngine>(device);
}

at::Tensor cuda_pinned_bytes(int64_t bytes) {
  void* ptr = nullptr;
  const cudaError_t err = cudaHostAlloc(&ptr, size_t(bytes), cudaHostAllocDefault);
  TORCH_CHECK(err == cudaSuccess, "cudaHostAlloc(", bytes, " bytes) failed: ", cudaGetErrorString(err));
  return at::from_blob(ptr, {bytes}, [](void* p) { cudaFreeHost(p); }, at::TensorOptions().dtype(at::kByte));
}

}  // namespace apt::vgpu
