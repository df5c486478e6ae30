// pread/pwrite thread pool backend.
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <c10/util/Exception.h>

#include "vgpu/io_backend.h"

namespace apt::vgpu {
namespace {

class PreadBackend final : public IoBackend {
 public:
  explicit PreadBackend(int threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { loop(); });
  }
  ~PreadBackend() override {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  std::future<int64_t> submit(const IoRequest& req) override {
    std::promise<int64_t> p;
    auto f = p.get_future();
    {
      std::lock_guard<std::mutex> g(mu_);
      queue_.emplace_back(req, std::move(p));
    }
    cv_.notify_one();
    return f;
  }

  std::string name() const override { return "pread"; }

 private:
  void loop() {
    for (;;) {
      std::pair<IoRequest, std::promise<int64_t>> job;
      {
        std::unique_lock<std::mutex> g(mu_);
        cv_.wait(g, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      const IoRequest& r = job.first;
      ssize_t n;
      do {
        n = r.write ? ::pwrite(r.fd, r.buf, size_t(r.len), off_t(r.offset))
                    : ::pread(r.fd, r.buf, size_t(r.len), off_t(r.offset));
      } while (n < 0 && errno == EINTR);
      job.second.set_value(n < 0 ? -int64_t(errno) : int64_t(n));
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<IoRequest, std::promise<int64_t>>> queue_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
};

}  // namespace

std::unique_ptr<IoBackend> make_pread_backend(int threads) {
  return std::make_unique<PreadBackend>(threads);
}

}  // namespace apt::vgpu
