#include "vgpu/checksum.h"

#if defined(APT_HAVE_XXHASH)
// Header-only: XXH3 compiles into this file, so the module needs no libxxhash at run time (a wheel
// works where libxxhash is not installed). XXH_INLINE_ALL also defines XXH3_state_t.
#define XXH_INLINE_ALL
#include <xxhash.h>
#elif defined(APT_HAVE_ZLIB)
#include <zlib.h>
#else
#error "the VGPU pager needs xxhash.h or zlib for its page checksums (see csrc/vgpu/extras.cmake)"
#endif

namespace apt::vgpu {

uint64_t page_checksum(const void* data, size_t len) {
#if defined(APT_HAVE_XXHASH)
  return XXH3_64bits(data, len);
#else
  // zlib's crc32 takes uInt lengths: feed large pages in 1 GiB pieces.
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = static_cast<const Bytef*>(data);
  while (len > 0) {
    const size_t n = len < (size_t(1) << 30) ? len : (size_t(1) << 30);
    crc = crc32(crc, p, uInt(n));
    p += n;
    len -= n;
  }
  return uint64_t(crc);
#endif
}

struct PageHasher::State {
#if defined(APT_HAVE_XXHASH)
  XXH3_state_t xxh;
#else
  uLong crc;
#endif
};

PageHasher::PageHasher() : state_(std::make_unique<State>()) {
#if defined(APT_HAVE_XXHASH)
  XXH3_INITSTATE(&state_->xxh);
  XXH3_64bits_reset(&state_->xxh);
#else
  state_->crc = crc32(0L, Z_NULL, 0);
#endif
}

PageHasher::~PageHasher() = default;

void PageHasher::update(const void* data, size_t len) {
#if defined(APT_HAVE_XXHASH)
  XXH3_64bits_update(&state_->xxh, data, len);
#else
  const auto* p = static_cast<const Bytef*>(data);
  while (len > 0) {
    const size_t n = len < (size_t(1) << 30) ? len : (size_t(1) << 30);
    state_->crc = crc32(state_->crc, p, uInt(n));
    p += n;
    len -= n;
  }
#endif
}

uint64_t PageHasher::digest() const {
#if defined(APT_HAVE_XXHASH)
  return XXH3_64bits_digest(&state_->xxh);
#else
  return uint64_t(state_->crc);
#endif
}

const char* checksum_name() {
#if defined(APT_HAVE_XXHASH)
  return "xxh3_64";
#else
  return "crc32 (zlib)";
#endif
}

}  // namespace apt::vgpu
