// Page checksums of the SSD tier: XXH3-64 (xxhash.h, header-only) when it was found at build time,
// otherwise zlib's CRC-32 (widened to 64 bits). checksum_name() says which one is compiled.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace apt::vgpu {

uint64_t page_checksum(const void* data, size_t len);
const char* checksum_name();

// Streaming form of page_checksum (same value for the same bytes fed in order), so that reads
// can hash each chunk as soon as it arrives while later chunks are still in flight.
class PageHasher {
 public:
  PageHasher();
  ~PageHasher();
  void update(const void* data, size_t len);
  uint64_t digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace apt::vgpu
