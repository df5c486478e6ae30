// Work pieces the intra-op threads of a CPU FP4 kernel claim one at a time.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace apt::fp4 {

// [0, n) in pieces of `size`, handed to the intra-op threads one at a time (claim): a thread
// that another process slows down takes fewer pieces instead of holding up the whole call, as
// an even split up front (at::parallel_for) would.
class Pieces {
 public:
  Pieces(int64_t n, int64_t size) : n_(n), size_(size), count_((n + size - 1) / size) {}

  // Runs worker() on min(pieces, intra-op threads) threads; each worker claims pieces until none is left.
  template <class Worker>
  void run(const Worker& worker) {
    at::parallel_for(0, std::min<int64_t>(count_, at::get_num_threads()), 1, [&](int64_t, int64_t) { worker(); });
  }

  // The next unclaimed piece [begin, end); false when none is left.
  bool claim(int64_t& begin, int64_t& end) {
    const int64_t i = next_.fetch_add(1);
    if (i >= count_) return false;
    begin = i * size_;
    end = std::min(n_, begin + size_);
    return true;
  }

 private:
  const int64_t n_, size_, count_;
  std::atomic<int64_t> next_{0};
};

}  // namespace apt::fp4
