#include "vgpu/free_list.h"

#include <c10/util/Exception.h>

namespace apt::vgpu {

FreeList::FreeList(int64_t size, int64_t align) : size_(size), align_(align) {
  TORCH_CHECK_VALUE(align > 0 && (align & (align - 1)) == 0, "align: expected a power of two, got ", align);
  TORCH_CHECK_VALUE(size > 0, "size: expected a positive byte count, got ", size);
  insert_free(0, size);
}

void FreeList::insert_free(int64_t off, int64_t len) {
  free_by_off_.emplace(off, len);
  free_by_len_.emplace(len, off);
}

void FreeList::erase_free(std::map<int64_t, int64_t>::iterator it) {
  auto range = free_by_len_.equal_range(it->second);
  for (auto j = range.first; j != range.second; ++j) {
    if (j->second == it->first) {
      free_by_len_.erase(j);
      break;
    }
  }
  free_by_off_.erase(it);
}

std::optional<int64_t> FreeList::allocate(int64_t bytes) {
  const int64_t need = rounded(bytes > 0 ? bytes : 1);
  auto best = free_by_len_.lower_bound(need);
  if (best == free_by_len_.end()) return std::nullopt;
  const int64_t off = best->second, len = best->first;
  erase_free(free_by_off_.find(off));
  if (len > need) insert_free(off + need, len - need);
  used_blocks_.emplace(off, need);
  used_ += need;
  return off;
}

void FreeList::release(int64_t offset) {
  auto u = used_blocks_.find(offset);
  TORCH_CHECK(u != used_blocks_.end(), "FreeList::release: offset ", offset, " was not allocated");
  int64_t off = u->first, len = u->second;
  used_blocks_.erase(u);
  used_ -= len;
  auto next = free_by_off_.find(off + len);
  if (next != free_by_off_.end()) {
    len += next->second;
    erase_free(next);
  }
  auto prev = free_by_off_.lower_bound(off);
  if (prev != free_by_off_.begin()) {
    --prev;
    if (prev->first + prev->second == off) {
      off = prev->first;
      len += prev->second;
      erase_free(prev);
    }
  }
  insert_free(off, len);
}

int64_t FreeList::largest_free() const {
  return free_by_len_.empty() ? 0 : free_by_len_.rbegin()->first;
}

}  // namespace apt::vgpu
