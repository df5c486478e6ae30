// Asynchronous file I/O for the SSD tier. Two implementations:
//  - io_uring (liburing, when found at build time): one ring with a queue depth, requests are
//    submitted by the caller and reaped by a completion thread;
//  - pread/pwrite on a thread pool: used when liburing is absent at build time, when
//    io_uring_queue_init fails at run time (containers often forbid it), or on request
//    (APT_VGPU_IO=pread / io_backend="pread").
#pragma once
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>

namespace apt::vgpu {

struct IoRequest {
  int fd;
  void* buf;
  int64_t len;
  int64_t offset;
  bool write;
};

class IoBackend {
 public:
  virtual ~IoBackend() = default;
  // Starts one read or write; the future yields bytes transferred or -errno.
  virtual std::future<int64_t> submit(const IoRequest& req) = 0;
  virtual std::string name() const = 0;
};

// `requested`: "auto" (io_uring if it works, else pread), "io_uring" or "pread".
// `queue_depth` is the io_uring ring size and the pread pool's thread count is min(qd, 8).
// `why` receives the reason when the result is not what was requested (or auto fell back).
std::unique_ptr<IoBackend> make_io_backend(const std::string& requested, int queue_depth, std::string* why);

std::unique_ptr<IoBackend> make_pread_backend(int threads);
// nullptr (and *why set) when liburing was not compiled in or the ring cannot be created.
std::unique_ptr<IoBackend> make_uring_backend(int queue_depth, std::string* why);

// Bytes per I/O request of a page transfer (VGPUStack's io_chunk_mb default, 4 MiB). On this
// project's ext4 virtio disk (benchmarks/results/vgpu_ssd_cpu_x86_64_x2.json, 1 GiB page, 64 in
// flight, io_uring) 1 / 4 / 8 MiB requests read at 1.15 / 1.49 / 1.35 GB/s and wrote at
// 1.77 / 1.72 / 1.82 GB/s, timed in turn in the same rounds.
constexpr int64_t kDefaultIoChunk = int64_t(4) << 20;

// Reads or writes all `len` bytes at `offset`, split into chunks of `chunk` bytes that are in
// flight together; resubmits short transfers. `on_chunk(pos, n)`, if given, is called for each
// chunk that completed in full, in submission order, while later chunks may still be in flight.
// Returns 0 or the first -errno.
using ChunkDone = std::function<void(int64_t pos, int64_t n)>;
int transfer_all(IoBackend& io, int fd, void* buf, int64_t len, int64_t offset, bool write,
                 const ChunkDone& on_chunk = nullptr, int64_t chunk = kDefaultIoChunk);

}  // namespace apt::vgpu
