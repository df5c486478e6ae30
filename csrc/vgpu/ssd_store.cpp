#include "vgpu/ssd_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <future>
#include <sstream>
#include <vector>

#include <c10/util/Exception.h>

#include "vgpu/checksum.h"
#include "vgpu/errors.h"

namespace apt::vgpu {

std::string errno_message(const std::string& what, int err) {
  const char* name = err == ENOSPC ? "ENOSPC" : err == EIO ? "EIO" : err == EFBIG ? "EFBIG"
                   : err == EDQUOT ? "EDQUOT" : err == EACCES ? "EACCES" : err == EINVAL ? "EINVAL" : "errno";
  return what + ": " + std::strerror(err) + " (" + name + " " + std::to_string(err) + ")";
}

SsdStore::SsdStore(const std::string& parent_dir, int64_t capacity, IoBackend& io, int64_t io_chunk)
    : capacity_(capacity), io_(&io), io_chunk_(io_chunk) {
  TORCH_CHECK_VALUE(!parent_dir.empty(), "path: the ssd level needs a directory ('path')");
  struct stat st;
  if (::stat(parent_dir.c_str(), &st) != 0) {
    TORCH_CHECK_VALUE(::mkdir(parent_dir.c_str(), 0700) == 0 || errno == EEXIST,
                      errno_message("path: cannot create directory '" + parent_dir + "'", errno));
  } else {
    TORCH_CHECK_VALUE(S_ISDIR(st.st_mode), "path: '", parent_dir, "' exists and is not a directory");
  }
  std::string tmpl = parent_dir + "/apt_vgpu_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  TORCH_CHECK_VALUE(::mkdtemp(buf.data()) != nullptr,
                    errno_message("path: cannot create a page directory under '" + parent_dir + "'", errno));
  dir_ = buf.data();

  if (const char* f = std::getenv("APT_VGPU_FAULT")) {
    std::stringstream ss(f);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.rfind("enospc_after=", 0) == 0) fault_enospc_after_ = std::atoll(item.c_str() + 13);
      else if (item == "eio_read") fault_eio_read_ = true;
      else if (item == "no_odirect") direct_ = false;
    }
  }
  if (direct_) {  // probe once so that stats() can say which mode this directory gets
    const std::string probe = dir_ + "/.odirect_probe";
    int fd = ::open(probe.c_str(), O_CREAT | O_WRONLY | O_DIRECT, 0600);
    if (fd < 0 && errno == EINVAL) direct_ = false;
    if (fd >= 0) ::close(fd);
    ::unlink(probe.c_str());
  }
}

SsdStore::~SsdStore() {
  if (DIR* d = ::opendir(dir_.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
        ::unlink((dir_ + "/" + e->d_name).c_str());
      }
    }
    ::closedir(d);
  }
  ::rmdir(dir_.c_str());
}

int SsdStore::open_page(const std::string& path, bool write) {
  const int flags = write ? (O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC) : (O_RDONLY | O_CLOEXEC);
  if (direct_) {
    int fd = ::open(path.c_str(), flags | O_DIRECT, 0600);
    if (fd >= 0 || errno != EINVAL) return fd;
    direct_ = false;  // this filesystem refuses O_DIRECT: buffered I/O from now on
  }
  return ::open(path.c_str(), flags, 0600);
}

SsdPage SsdStore::write(uint64_t id, const void* buf, int64_t len) {
  SsdPage page;
  page.path = dir_ + "/" + std::to_string(id) + ".page";
  page.padded = padded(len);
  if (fault_enospc_after_ >= 0 && written_ + page.padded > fault_enospc_after_) {
    throw IoError(ENOSPC, errno_message("SSD tier: writing " + page.path + " (injected by APT_VGPU_FAULT)", ENOSPC));
  }
  int fd = open_page(page.path, true);
  if (fd < 0) {
    const int err = errno;
    throw IoError(err, errno_message("SSD tier: cannot create " + page.path, err));
  }
  // Reserve the page's blocks up front (one allocation instead of one per write, and a full disk
  // reported before any byte is written); file systems without fallocate just write.
  // (Linux fallocate, not posix_fallocate: glibc emulates the latter by writing every block.)
  if (::fallocate(fd, 0, 0, page.padded) != 0 && errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL) {
    const int err = errno;
    ::close(fd);
    ::unlink(page.path.c_str());
    throw IoError(err, errno_message("SSD tier: reserving " + std::to_string(page.padded) + " bytes for " + page.path,
                                     err));
  }
  // The checksum is taken while the writes are in flight (both only read `buf`).
  std::future<uint64_t> checksum =
      std::async(std::launch::async, [buf, len] { return page_checksum(buf, size_t(len)); });
  const int rc = transfer_all(*io_, fd, const_cast<void*>(buf), page.padded, 0, true, nullptr, io_chunk_);
  page.checksum = checksum.get();
  ::close(fd);
  if (rc < 0) {
    ::unlink(page.path.c_str());
    throw IoError(-rc, errno_message("SSD tier: writing " + std::to_string(page.padded) + " bytes to " + page.path, -rc));
  }
  written_ += page.padded;
  used_ += page.padded;
  return page;
}

void SsdStore::read(const SsdPage& page, void* buf, int64_t len, const std::string& key) {
  if (fault_eio_read_) {
    throw IoError(EIO, errno_message("SSD tier: reading " + page.path + " (injected by APT_VGPU_FAULT)", EIO));
  }
  int fd = open_page(page.path, false);
  if (fd < 0) {
    const int err = errno;
    throw IoError(err, errno_message("SSD tier: cannot open " + page.path + " for key '" + key + "'", err));
  }
  // Hash each chunk as it lands (in order) while later chunks are still being read.
  PageHasher hasher;
  int64_t hashed = 0;
  auto on_chunk = [&](int64_t pos, int64_t n) {
    if (pos != hashed) return;  // out of order (after a short read): rehashed below
    if (pos < len) hasher.update(static_cast<const char*>(buf) + pos, size_t(std::min(n, len - pos)));
    hashed += n;
  };
  int rc = transfer_all(*io_, fd, buf, page.padded, 0, false, on_chunk, io_chunk_);
  ::close(fd);
  if (rc < 0) {
    throw IoError(-rc, errno_message("SSD tier: reading " + page.path + " for key '" + key + "'", -rc));
  }
  const uint64_t got = hashed >= len ? hasher.digest() : page_checksum(buf, size_t(len));
  if (got != page.checksum) {
    std::ostringstream os;
    os << "SSD tier: page of key '" << key << "' (" << page.path << ") failed its " << checksum_name()
       << " checksum: stored " << std::hex << page.checksum << ", read " << got << "; the file was modified or the disk returned bad data";
    throw ChecksumError(os.str());
  }
}

void SsdStore::erase(const SsdPage& page) {
  ::unlink(page.path.c_str());
  used_ -= page.padded;
}

}  // namespace apt::vgpu
