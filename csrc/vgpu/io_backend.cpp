// The I/O backend factory (io_uring or pread, with run-time fallback) and transfer_all.
#include <cerrno>
#include <cstdlib>
#include <vector>

#include <c10/util/Exception.h>

#include "vgpu/io_backend.h"

namespace apt::vgpu {

std::unique_ptr<IoBackend> make_io_backend(const std::string& requested, int queue_depth, std::string* why) {
  std::string req = requested;
  if (req == "auto") {
    const char* env = std::getenv("APT_VGPU_IO");
    if (env != nullptr && *env != '\0') req = env;
    if (req != "auto" && req != "pread" && req != "io_uring") {
      *why = "APT_VGPU_IO='" + req + "' is not one of 'pread', 'io_uring'; using auto";
      req = "auto";
    }
  }
  TORCH_CHECK_VALUE(req == "auto" || req == "pread" || req == "io_uring",
                    "io_backend: expected 'auto', 'io_uring' or 'pread', got '", requested, "'");
  const int threads = queue_depth < 8 ? queue_depth : 8;
  if (req == "pread") {
    if (requested == "auto") *why = "APT_VGPU_IO=pread";
    return make_pread_backend(threads);
  }
  std::string uring_why;
  auto uring = make_uring_backend(queue_depth, &uring_why);
  if (uring) return uring;
  TORCH_CHECK(req != "io_uring", "io_backend='io_uring' is unavailable: ", uring_why);
  *why = uring_why;
  return make_pread_backend(threads);
}

int transfer_all(IoBackend& io, int fd, void* buf, int64_t len, int64_t offset, bool write,
                 const ChunkDone& on_chunk, int64_t chunk) {
  struct Part {
    int64_t pos, len;
    std::future<int64_t> fut;
  };
  std::vector<Part> parts;
  for (int64_t pos = 0; pos < len; pos += chunk) {
    const int64_t n = len - pos < chunk ? len - pos : chunk;
    parts.push_back({pos, n, io.submit({fd, static_cast<char*>(buf) + pos, n, offset + pos, write})});
  }
  int first_err = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    int64_t got = parts[i].fut.get();
    if (got < 0) {
      if (first_err == 0) first_err = int(-got);
      continue;
    }
    if (first_err != 0) continue;
    if (got == parts[i].len) {
      if (on_chunk) on_chunk(parts[i].pos, parts[i].len);
      continue;
    }
    if (got == 0) {  // end of file before the page ended (reads) or no progress (writes)
      first_err = write ? ENOSPC : EIO;
      continue;
    }
    // Short transfer: resubmit the remainder of this part and wait for it next.
    Part rest{parts[i].pos + got, parts[i].len - got, {}};
    rest.fut = io.submit({fd, static_cast<char*>(buf) + rest.pos, rest.len, offset + rest.pos, write});
    parts.push_back(std::move(rest));
  }
  return first_err == 0 ? 0 : -first_err;
}

}  // namespace apt::vgpu
