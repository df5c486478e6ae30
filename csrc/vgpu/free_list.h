// FreeList: a best-fit sub-allocator over one contiguous range [0, size) with coalescing of
// neighbouring free blocks. Used by HostSlab to carve the pinned host slab. Not thread-safe
// (the pager serialises calls).
#pragma once
#include <cstdint>
#include <map>
#include <optional>

namespace apt::vgpu {

class FreeList {
 public:
  // `size` bytes, every block aligned to and rounded up to `align` bytes (a power of two).
  FreeList(int64_t size, int64_t align);

  // Offset of a block of at least `bytes` (rounded up to the alignment), or nullopt when no
  // free block is large enough.
  std::optional<int64_t> allocate(int64_t bytes);
  // Returns the block that `allocate` gave at `offset`; neighbouring free blocks merge.
  void release(int64_t offset);

  int64_t rounded(int64_t bytes) const { return (bytes + align_ - 1) / align_ * align_; }
  int64_t size() const { return size_; }
  int64_t used() const { return used_; }
  int64_t largest_free() const;

 private:
  void insert_free(int64_t off, int64_t len);
  void erase_free(std::map<int64_t, int64_t>::iterator it);

  int64_t size_, align_, used_ = 0;
  std::map<int64_t, int64_t> free_by_off_;        // offset -> length
  std::multimap<int64_t, int64_t> free_by_len_;   // length -> offset (best fit)
  std::map<int64_t, int64_t> used_blocks_;        // offset -> length
};

}  // namespace apt::vgpu
