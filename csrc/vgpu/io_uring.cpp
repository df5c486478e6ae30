// io_uring backend (liburing): callers submit SQEs under a mutex; one completion thread reaps
// CQEs and fulfils the per-request promises. At most `queue_depth` requests are in flight.
#include "vgpu/io_backend.h"

#ifdef APT_HAVE_LIBURING
#include <liburing.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <c10/util/Exception.h>

namespace apt::vgpu {
namespace {

constexpr uint64_t kStopTag = ~uint64_t(0);

class UringBackend final : public IoBackend {
 public:
  UringBackend(int queue_depth, io_uring ring) : depth_(queue_depth), ring_(ring) {
    reaper_ = std::thread([this] { reap(); });
  }

  ~UringBackend() override {
    {
      std::unique_lock<std::mutex> g(mu_);
      space_.wait(g, [this] { return inflight_ < depth_; });
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) {
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
      }
      TORCH_CHECK(sqe != nullptr, "io_uring: no submission slot for the shutdown request");
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, kStopTag);
      int rc = io_uring_submit(&ring_);
      TORCH_CHECK(rc >= 0, "io_uring_submit (shutdown): ", std::strerror(-rc));
    }
    reaper_.join();
    io_uring_queue_exit(&ring_);
  }

  std::future<int64_t> submit(const IoRequest& req) override {
    std::promise<int64_t> p;
    auto fut = p.get_future();
    std::unique_lock<std::mutex> g(mu_);
    space_.wait(g, [this] { return inflight_ < depth_; });
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {  // SQ full of unsubmitted entries: flush and retry once
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    if (sqe == nullptr) {
      p.set_value(-EAGAIN);
      return fut;
    }
    if (req.write) {
      io_uring_prep_write(sqe, req.fd, req.buf, unsigned(req.len), uint64_t(req.offset));
    } else {
      io_uring_prep_read(sqe, req.fd, req.buf, unsigned(req.len), uint64_t(req.offset));
    }
    const uint64_t tag = next_tag_++;
    io_uring_sqe_set_data64(sqe, tag);
    pending_.emplace(tag, std::move(p));
    ++inflight_;
    int rc = io_uring_submit(&ring_);
    if (rc < 0) {  // the kernel took nothing: fail this request instead of hanging
      auto it = pending_.find(tag);
      it->second.set_value(rc);
      pending_.erase(it);
      --inflight_;
    }
    return fut;
  }

  std::string name() const override { return "io_uring"; }

 private:
  void reap() {
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      int rc = io_uring_wait_cqe(&ring_, &cqe);
      if (rc == -EINTR || rc == -EAGAIN) continue;
      if (rc < 0) {  // the ring is broken: fail everything in flight, keep serving the stop tag
        std::lock_guard<std::mutex> g(mu_);
        for (auto& kv : pending_) kv.second.set_value(rc);
        inflight_ -= int(pending_.size());
        pending_.clear();
        space_.notify_all();
        return;
      }
      const uint64_t tag = io_uring_cqe_get_data64(cqe);
      const int64_t res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      if (tag == kStopTag) return;
      std::lock_guard<std::mutex> g(mu_);
      auto it = pending_.find(tag);
      if (it != pending_.end()) {
        it->second.set_value(res);
        pending_.erase(it);
        --inflight_;
        space_.notify_one();
      }
    }
  }

  const int depth_;
  io_uring ring_;
  std::mutex mu_;
  std::condition_variable space_;
  std::unordered_map<uint64_t, std::promise<int64_t>> pending_;
  uint64_t next_tag_ = 1;
  int inflight_ = 0;
  std::thread reaper_;
};

}  // namespace

std::unique_ptr<IoBackend> make_uring_backend(int queue_depth, std::string* why) {
  io_uring ring;
  // Completion queue twice the depth: the stop NOP always finds room.
  io_uring_params params;
  std::memset(&params, 0, sizeof(params));
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = unsigned(2 * queue_depth + 2);
  int rc = io_uring_queue_init_params(unsigned(queue_depth), &ring, &params);
  if (rc < 0) {
    *why = std::string("io_uring_queue_init failed: ") + std::strerror(-rc) + " (errno " + std::to_string(-rc) +
           "); using the pread thread pool";
    return nullptr;
  }
  return std::make_unique<UringBackend>(queue_depth, ring);
}

}  // namespace apt::vgpu

#else  // liburing not found at build time

namespace apt::vgpu {

std::unique_ptr<IoBackend> make_uring_backend(int, std::string* why) {
  *why = "liburing was not found when apt_ext was built (install liburing-dev and rebuild); using the pread thread pool";
  return nullptr;
}

}  // namespace apt::vgpu

#endif
