// Page checksums of the SSD tier: XXH3-64 from libxxhash when it was found at build time,
// otherwise zlib's CRC-32 (widened to 64 bits). checksum_name() says which one is compiled.
#pragma once
#include <cstddef>
#include <cstdint>

namespace apt::vgpu {

uint64_t page_checksum(const void* data, size_t len);
const char* checksum_name();

}  // namespace apt::vgpu
