// Work pieces the intra-op threads of a CPU FP4 kernel claim one at a time.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>

namespace apt::fp4 {

// [0, n) in pieces of `size`, dealt out in lanes: the pieces are split into one contiguous lane
// per thread, each thread claims the pieces of its own lane front to back, then those left in
// the other lanes. So each thread streams one contiguous part of the weight (the hardware
// prefetchers follow one stream, no jump every piece), and a thread that another process slows
// down, or that starts late, takes fewer pieces instead of holding up the whole call, as an even
// split up front (at::parallel_for) would.
class Pieces {
 public:
  Pieces(int64_t n, int64_t size) : n_(n), size_(size), count_((n + size - 1) / size) {}

  // Runs worker(lane) on min(pieces, intra-op threads) threads, lane = 0, 1, ...; each worker
  // claims pieces (claim(lane, ...)) until none is left.
  template <class Worker>
  void run(const Worker& worker) {
    lanes_ = std::max<int64_t>(1, std::min<int64_t>(count_, at::get_num_threads()));
    next_ = std::make_unique<std::atomic<int64_t>[]>(static_cast<size_t>(lanes_));
    for (int64_t l = 0; l < lanes_; ++l) next_[l].store(lane_begin(l), std::memory_order_relaxed);
    at::parallel_for(0, lanes_, 1, [&](int64_t begin, int64_t end) {
      for (int64_t lane = begin; lane < end; ++lane) worker(lane);
    });
  }

  // The next unclaimed piece [begin, end) for the worker of `lane`: from its own lane while any
  // is left there, then from the other lanes in turn; false when none is left anywhere.
  bool claim(int64_t lane, int64_t& begin, int64_t& end) {
    for (int64_t j = 0; j < lanes_; ++j) {
      const int64_t l = (lane + j) % lanes_;
      if (next_[l].load(std::memory_order_relaxed) >= lane_begin(l + 1)) continue;
      const int64_t i = next_[l].fetch_add(1);
      if (i >= lane_begin(l + 1)) continue;
      begin = i * size_;
      end = std::min(n_, begin + size_);
      return true;
    }
    return false;
  }

 private:
  int64_t lane_begin(int64_t lane) const { return count_ * lane / lanes_; }

  const int64_t n_, size_, count_;
  int64_t lanes_ = 1;
  std::unique_ptr<std::atomic<int64_t>[]> next_;
};

}  // namespace apt::fp4
