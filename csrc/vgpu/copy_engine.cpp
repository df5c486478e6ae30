// The CPU CopyEngine (device tier on the CPU) and the factory.
#include "vgpu/copy_engine.h"

#include <c10/util/Exception.h>

namespace apt::vgpu {
namespace {

class CpuCopyEngine final : public CopyEngine {
 public:
  at::Tensor to_device(const at::Tensor& src, std::shared_ptr<PendingCopy>* pending) override {
    const auto t0 = std::chrono::steady_clock::now();
    // new_empty, a Tensor method: at::empty's header would add seconds to this file's build
    at::Tensor dst = src.new_empty(src.sizes(), src.options().device(at::kCPU).pinned_memory(false));
    dst.copy_(src);
    h2d_.add(src.nbytes(), seconds_since(t0));
    pending->reset();
    return dst;
  }
  void to_host(const at::Tensor& dst, const at::Tensor& src) override {
    const auto t0 = std::chrono::steady_clock::now();
    dst.copy_(src);
    d2h_.add(src.nbytes(), seconds_since(t0));
  }
  void hand_out(const at::Tensor&) override {}
  void collect(LinkStat& h2d, LinkStat& d2h) override {
    h2d.bytes += h2d_.bytes, h2d.seconds += h2d_.seconds, h2d.transfers += h2d_.transfers;
    d2h.bytes += d2h_.bytes, d2h.seconds += d2h_.seconds, d2h.transfers += d2h_.transfers;
    h2d_ = LinkStat{};
    d2h_ = LinkStat{};
  }

 private:
  LinkStat h2d_, d2h_;
};

}  // namespace

std::unique_ptr<CopyEngine> make_copy_engine(const at::Device& device) {
  if (device.is_cpu()) return std::make_unique<CpuCopyEngine>();
#ifdef APT_WITH_CUDA
  if (device.is_cuda()) return make_cuda_copy_engine(device);
#endif
  TORCH_CHECK_VALUE(!device.is_cuda(), "device: '", device.str(), "' needs apt_ext built with CUDA (this build is CPU-only)");
  TORCH_CHECK_VALUE(false, "device: the device tier supports 'cuda[:i]' or 'cpu', got '", device.str(), "'");
}

}  // namespace apt::vgpu
