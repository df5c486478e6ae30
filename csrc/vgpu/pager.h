// Pager: the VGPU stack's tiers and policy (C++17, thread-safe behind one mutex).
//
// Levels, fastest first, each kind at most once and in this order:
//   device  - at::Tensors on a CUDA device (or on the CPU when there is no GPU),
//   host    - one slab of host memory allocated up front (pinned when CUDA is available,
//             page-aligned plain memory otherwise), carved by a best-fit FreeList,
//   ssd     - one file per page under a private directory (SsdStore).
// An entry may hold copies in several levels (all identical): a promotion keeps the copy it
// came from, so dropping an unmodified copy later costs nothing. Eviction is LRU per level;
// an entry's only copy is DEMOTED to the next level, never dropped. Pinned entries are never
// evicted from their fastest level. When no level can make room, CapacityError is thrown and
// nothing stored changes except demotions that completed (which keep every byte).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <condition_variable>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "vgpu/copy_engine.h"
#include "vgpu/errors.h"
#include "vgpu/free_list.h"
#include "vgpu/io_backend.h"
#include "vgpu/ssd_store.h"

namespace apt::vgpu {

enum class Kind { Device = 0, Host = 1, Ssd = 2 };

struct LevelSpec {
  std::string kind;     // "device", "host" or "ssd"
  std::string device;   // device level: "cuda[:i]" or "cpu"
  int64_t capacity = 0; // bytes
  std::string path;     // ssd level: parent directory
  double speed_gbps = 0.0;  // nominal, reported next to the measured value, never used
};

struct LevelStats {
  std::string kind, device;
  int64_t capacity = 0, used = 0, entries = 0, pinned = 0;
  int64_t hits = 0, misses = 0, evictions = 0;
  double speed_gbps = 0.0;
};

struct StatsSnapshot {
  std::vector<LevelStats> levels;
  std::vector<std::pair<std::string, LinkStat>> links;
  std::string io_backend, io_note, ssd_dir, checksum;
  bool host_pinned = false, o_direct = false;
  int64_t gets = 0, puts = 0, prefetched = 0, prefetch_errors = 0;
  std::string last_prefetch_error;
};

// Thrown by get/pin/... for a key that is not stored (Python KeyError).
struct MissingKey : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Pager {
 public:
  // io_chunk: bytes per I/O request of an SSD page transfer (a multiple of 4 KiB).
  Pager(const std::vector<LevelSpec>& levels, const std::string& io_backend, int queue_depth, int64_t io_chunk);
  ~Pager();
  Pager(const Pager&) = delete;
  Pager& operator=(const Pager&) = delete;

  void put(const std::string& key, const at::Tensor& tensor);
  // The tensor of `key`. device: nullopt -> the fastest level's device (promotes there and
  // returns the resident tensor itself: treat it as read-only); another device -> a copy.
  at::Tensor get(const std::string& key, const std::optional<at::Device>& device);
  void prefetch(const std::vector<std::string>& keys);  // asynchronous promotion to level 0
  void wait_prefetch();                                  // until the prefetch queue is empty
  void pin(const std::string& key);
  void unpin(const std::string& key);
  bool evict(const std::string& key);  // one level down; false if already in the last level
  void remove(const std::string& key);
  bool contains(const std::string& key);
  int level_of(const std::string& key);  // index of the fastest level holding the key
  std::vector<std::string> keys();
  StatsSnapshot stats();
  void close();
  bool closed();

 private:
  struct Entry;
  struct Level {
    Kind kind;
    LevelSpec spec;
    at::Device device{at::kCPU};
    int64_t used = 0;  // device level; host/ssd ask their allocator/store
    std::list<Entry*> lru;  // front = most recently used
    int64_t hits = 0, misses = 0, evictions = 0;
  };

  void check_open() const;
  Entry& find(const std::string& key);
  int top(const Entry& e) const;
  bool has(const Entry& e, int lvl) const;
  int64_t cost(int lvl, int64_t nbytes) const;
  int64_t used(int lvl) const;
  bool ever_fits(int lvl, int64_t nbytes) const;
  void touch(Entry& e, int lvl);
  // Makes room for `nbytes` in `lvl` by evicting LRU copies; for the host level returns the
  // slab offset reserved. nullopt when the level cannot make room.
  std::optional<int64_t> reserve(int lvl, int64_t nbytes);
  bool try_evict_one(int lvl);
  bool demote(Entry& e, int lvl);  // copy e's data from lvl into lvl+1 (making room there)
  // Copies e's data (from its fastest copy) into `lvl`, where room was reserved (`host_off`).
  void fill(Entry& e, int lvl, int64_t host_off);
  void drop(Entry& e, int lvl);
  bool place(Entry& e, int lvl);  // reserve + fill; false when no room
  void promote(Entry& e, int target);
  at::Tensor host_view(const Entry& e) const;
  at::Tensor read_ssd(Entry& e);  // into a fresh aligned host buffer, verified
  at::Tensor materialize(Entry& e, const at::Device& device);
  void add_link(const std::string& name, int64_t bytes, double seconds);
  void merge_link(const std::string& name, const LinkStat& add);
  std::string capacity_report() const;
  void prefetch_loop();

  std::mutex mu_;
  std::vector<Level> levels_;
  int lvl_of_kind_[3] = {-1, -1, -1};
  std::unordered_map<std::string, std::unique_ptr<Entry>> entries_;
  uint64_t next_id_ = 1;

  std::unique_ptr<CopyEngine> copier_;
  at::Tensor slab_;  // owns the host level's memory
  char* slab_base_ = nullptr;
  std::unique_ptr<FreeList> slab_alloc_;
  bool host_pinned_ = false;
  std::unique_ptr<IoBackend> io_;
  std::string io_note_;
  std::unique_ptr<SsdStore> ssd_;

  std::vector<std::pair<std::string, LinkStat>> links_;
  int64_t gets_ = 0, puts_ = 0, prefetched_ = 0, prefetch_errors_ = 0;
  std::string last_prefetch_error_;

  std::deque<std::string> prefetch_queue_;
  bool prefetch_busy_ = false, stop_ = false, closed_ = false;
  std::condition_variable prefetch_cv_, prefetch_idle_cv_;
  std::thread prefetch_thread_;
};

}  // namespace apt::vgpu
