// SsdStore: the SSD tier's pages, one file per page in a private directory created under the
// configured path (removed with its files on destruction). Files are opened with O_DIRECT when
// the filesystem accepts it (buffers and lengths are 4 KiB aligned) and with buffered I/O when
// open(O_DIRECT) fails with EINVAL (e.g. ramfs, some tmpfs/overlay mounts). Every page's checksum
// is kept in memory and verified on read. A cache for this process only, not durable storage.
//
// Fault injection for tests, APT_VGPU_FAULT (comma separated, read at construction):
//   enospc_after=<bytes>  writes fail with ENOSPC once that many bytes were written
//   eio_read              every read fails with EIO
//   no_odirect            behave as if open(O_DIRECT) failed with EINVAL
#pragma once
#include <cstdint>
#include <string>

#include "vgpu/io_backend.h"

namespace apt::vgpu {

constexpr int64_t kPageAlign = 4096;

struct SsdPage {
  std::string path;
  int64_t padded = 0;  // bytes on disk (multiple of kPageAlign)
  uint64_t checksum = 0;
};

class SsdStore {
 public:
  // `io_chunk`: bytes per I/O request of a page transfer (transfer_all).
  SsdStore(const std::string& parent_dir, int64_t capacity, IoBackend& io, int64_t io_chunk);
  ~SsdStore();
  SsdStore(const SsdStore&) = delete;
  SsdStore& operator=(const SsdStore&) = delete;

  static int64_t padded(int64_t len) { return (len + kPageAlign - 1) / kPageAlign * kPageAlign; }
  bool fits(int64_t len) const { return used_ + padded(len) <= capacity_; }

  // Writes `len` bytes of `buf` (4 KiB aligned, padded(len) bytes readable) as page `id`.
  // Throws IoError (the file is removed; nothing is accounted) on failure.
  SsdPage write(uint64_t id, const void* buf, int64_t len);
  // Reads the page into `buf` (4 KiB aligned, page.padded bytes writable) and verifies
  // `len` bytes against the checksum. Throws IoError or ChecksumError (naming `key`).
  void read(const SsdPage& page, void* buf, int64_t len, const std::string& key);
  void erase(const SsdPage& page);

  bool direct() const { return direct_; }
  void set_io(IoBackend& io) { io_ = &io; }
  const std::string& dir() const { return dir_; }
  int64_t used() const { return used_; }
  int64_t capacity() const { return capacity_; }

 private:
  int open_page(const std::string& path, bool write);

  std::string dir_;
  int64_t capacity_, used_ = 0;
  IoBackend* io_;
  int64_t io_chunk_;
  bool direct_ = true;
  int64_t fault_enospc_after_ = -1, written_ = 0;
  bool fault_eio_read_ = false;
};

}  // namespace apt::vgpu
