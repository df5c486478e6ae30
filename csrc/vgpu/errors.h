// Exceptions of the VGPU pager. The bindings map them to Python classes:
// CapacityError -> apt_ext.vgpu.VGPUCapacityError (RuntimeError),
// IoError       -> apt_ext.vgpu.VGPUIOError (OSError),
// ChecksumError -> apt_ext.vgpu.VGPUChecksumError (RuntimeError).
#pragma once
#include <stdexcept>
#include <string>

namespace apt::vgpu {

// Every tier is full (or the tensor is larger than any tier): nothing was stored or lost.
struct CapacityError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A system call of the SSD tier failed (ENOSPC, EIO, ...); `err` is the errno value.
struct IoError : std::runtime_error {
  IoError(int err, const std::string& what) : std::runtime_error(what), err(err) {}
  int err;
};

// The checksum of an SSD page did not match what was written.
struct ChecksumError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "what: strerror(err) (ENAME)" message for a failed system call.
std::string errno_message(const std::string& what, int err);

}  // namespace apt::vgpu
