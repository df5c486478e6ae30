#include "vgpu/pager.h"

#include <cstring>
#include <sstream>

#include <ATen/Context.h>  // at::hasCUDA
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include "vgpu/checksum.h"

namespace apt::vgpu {

struct Pager::Entry {
  uint64_t id = 0;
  std::string key;
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  int64_t nbytes = 0;
  int pins = 0;
  int busy = 0;  // being moved or read: never chosen as an eviction victim
  at::Tensor dev;
  std::shared_ptr<PendingCopy> dev_ready;  // host->device copy that may still read the slab
  int64_t host_off = -1;
  std::optional<SsdPage> ssd;
  std::list<Entry*>::iterator pos[3];
  bool in_lru[3] = {false, false, false};
};

namespace {

struct Busy {
  explicit Busy(int& b) : b_(b) { ++b_; }
  ~Busy() { --b_; }
  int& b_;
};

const char* kind_name(Kind k) { return k == Kind::Device ? "device" : k == Kind::Host ? "host" : "ssd"; }

// A host buffer of `bytes` whose data pointer is kPageAlign aligned (for O_DIRECT).
at::Tensor aligned_host(int64_t bytes) {
  at::Tensor raw = at::empty({bytes + kPageAlign}, at::TensorOptions().dtype(at::kByte));
  const auto addr = reinterpret_cast<uintptr_t>(raw.data_ptr());
  const int64_t pad = int64_t((kPageAlign - addr % kPageAlign) % kPageAlign);
  return raw.narrow(0, pad, bytes);
}

at::Tensor typed_view(const at::Tensor& bytes, at::ScalarType dtype, const std::vector<int64_t>& shape) {
  return bytes.view(dtype).view(shape);
}

std::string mb(int64_t b) {
  std::ostringstream os;
  os.precision(3);
  os << double(b) / (1 << 20) << " MB";
  return os.str();
}

}  // namespace

Pager::Pager(const std::vector<LevelSpec>& specs, const std::string& io_backend, int queue_depth, int64_t io_chunk) {
  TORCH_CHECK_VALUE(!specs.empty(), "levels: expected at least one level");
  TORCH_CHECK_VALUE(queue_depth >= 1 && queue_depth <= 4096, "queue_depth: expected 1..4096, got ", queue_depth);
  TORCH_CHECK_VALUE(io_chunk >= kPageAlign && io_chunk <= (int64_t(1) << 30) && io_chunk % kPageAlign == 0,
                    "io_chunk_mb: expected a multiple of 4 KiB from 4 KiB to 1 GiB, got ", io_chunk, " bytes");
  int last_kind = -1;
  for (size_t i = 0; i < specs.size(); ++i) {
    const LevelSpec& s = specs[i];
    Level L;
    L.spec = s;
    if (s.kind == "device") L.kind = Kind::Device;
    else if (s.kind == "host") L.kind = Kind::Host;
    else if (s.kind == "ssd") L.kind = Kind::Ssd;
    else TORCH_CHECK_VALUE(false, "levels[", i, "].kind: expected 'device', 'host' or 'ssd', got '", s.kind, "'");
    TORCH_CHECK_VALUE(int(L.kind) > last_kind, "levels[", i, "]: levels must be ordered device, host, ssd with each kind at most once; got '",
                      s.kind, "' after '", kind_name(Kind(last_kind < 0 ? 0 : last_kind)), "'");
    last_kind = int(L.kind);
    TORCH_CHECK_VALUE(s.capacity > 0, "levels[", i, "].capacity_mb: expected a positive size, got ", s.capacity, " bytes");
    lvl_of_kind_[int(L.kind)] = int(i);
    levels_.push_back(std::move(L));
  }
  for (size_t i = 0; i < levels_.size(); ++i) {
    Level& L = levels_[i];
    const LevelSpec& s = L.spec;
    if (L.kind == Kind::Device) {
      try {
        L.device = at::Device(s.device);
      } catch (const c10::Error&) {
        TORCH_CHECK_VALUE(false, "levels[", i, "].device: expected 'cuda', 'cuda:<i>' or 'cpu', got '", s.device, "'");
      }
      TORCH_CHECK_VALUE(L.device.is_cpu() || L.device.is_cuda(), "levels[", i, "].device: expected 'cuda[:i]' or 'cpu', got '", s.device, "'");
      TORCH_CHECK_VALUE(!L.device.is_cuda() || at::hasCUDA(), "levels[", i, "].device: '", s.device, "' but torch sees no CUDA device");
      copier_ = make_copy_engine(L.device);
    } else if (L.kind == Kind::Host) {
      TORCH_CHECK_VALUE(s.capacity >= kPageAlign, "levels[", i, "].capacity_mb: the host slab needs at least 4 KiB");
      host_pinned_ = at::hasCUDA();
      try {
#ifdef APT_WITH_CUDA
        slab_ = host_pinned_ ? cuda_pinned_bytes(s.capacity + kPageAlign)
                             : at::empty({s.capacity + kPageAlign}, at::TensorOptions().dtype(at::kByte));
#else
        // torch's pinned allocator (CUDA torch without a CUDA build of apt_ext) rounds up to a power of two
        slab_ = at::empty({s.capacity + kPageAlign}, at::TensorOptions().dtype(at::kByte).pinned_memory(host_pinned_));
#endif
      } catch (const c10::Error& err) {
        TORCH_CHECK_VALUE(false, "levels[", i, "].capacity_mb: cannot allocate a host slab of ", mb(s.capacity), ": ", err.what_without_backtrace());
      }
      const auto addr = reinterpret_cast<uintptr_t>(slab_.data_ptr());
      const int64_t pad = int64_t((kPageAlign - addr % kPageAlign) % kPageAlign);
      slab_ = slab_.narrow(0, pad, s.capacity / kPageAlign * kPageAlign);
      slab_base_ = static_cast<char*>(slab_.data_ptr());
      slab_alloc_ = std::make_unique<FreeList>(slab_.numel(), kPageAlign);
    } else {
      io_ = make_io_backend(io_backend, queue_depth, &io_note_);
      ssd_ = std::make_unique<SsdStore>(s.path, s.capacity, *io_, io_chunk);
      if (!ssd_->direct() && io_->name() == "io_uring" && io_backend == "auto") {
        // Buffered I/O (the filesystem refused O_DIRECT): the pread/pwrite pool, as documented.
        auto pool = make_pread_backend(queue_depth < 8 ? queue_depth : 8);
        ssd_->set_io(*pool);
        io_ = std::move(pool);
        io_note_ = "the filesystem of '" + s.path + "' refuses O_DIRECT: buffered pread/pwrite pool";
      }
    }
  }
  prefetch_thread_ = std::thread([this] { prefetch_loop(); });
}

Pager::~Pager() {
  try {
    close();
  } catch (...) {
  }
}

void Pager::check_open() const { TORCH_CHECK(!closed_, "VGPUStack: the stack is closed"); }

Pager::Entry& Pager::find(const std::string& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) throw MissingKey("key '" + key + "' is not in the stack");
  return *it->second;
}

bool Pager::has(const Entry& e, int lvl) const {
  switch (levels_[lvl].kind) {
    case Kind::Device: return e.dev.defined();
    case Kind::Host: return e.host_off >= 0;
    default: return e.ssd.has_value();
  }
}

int Pager::top(const Entry& e) const {
  for (int i = 0; i < int(levels_.size()); ++i) {
    if (has(e, i)) return i;
  }
  TORCH_CHECK(false, "VGPUStack internal error: key '", e.key, "' has no copy");
}

int64_t Pager::cost(int lvl, int64_t nbytes) const {
  switch (levels_[lvl].kind) {
    case Kind::Device: return nbytes;
    case Kind::Host: return slab_alloc_->rounded(nbytes > 0 ? nbytes : 1);
    default: return SsdStore::padded(nbytes);
  }
}

int64_t Pager::used(int lvl) const {
  switch (levels_[lvl].kind) {
    case Kind::Device: return levels_[lvl].used;
    case Kind::Host: return slab_alloc_->used();
    default: return ssd_->used();
  }
}

bool Pager::ever_fits(int lvl, int64_t nbytes) const {
  const int64_t cap = levels_[lvl].kind == Kind::Host ? slab_alloc_->size() : levels_[lvl].spec.capacity;
  return cost(lvl, nbytes) <= cap;
}

void Pager::touch(Entry& e, int lvl) {
  auto& lru = levels_[lvl].lru;
  if (e.in_lru[lvl]) lru.erase(e.pos[lvl]);
  lru.push_front(&e);
  e.pos[lvl] = lru.begin();
  e.in_lru[lvl] = true;
}

std::optional<int64_t> Pager::reserve(int lvl, int64_t nbytes) {
  if (!ever_fits(lvl, nbytes)) return std::nullopt;
  Level& L = levels_[lvl];
  for (;;) {
    if (L.kind == Kind::Device && L.used + nbytes <= L.spec.capacity) {
      L.used += nbytes;
      return 0;
    }
    if (L.kind == Kind::Host) {
      if (auto off = slab_alloc_->allocate(nbytes)) return off;
    }
    if (L.kind == Kind::Ssd && ssd_->fits(nbytes)) return 0;
    if (!try_evict_one(lvl)) return std::nullopt;
  }
}

bool Pager::try_evict_one(int lvl) {
  auto& lru = levels_[lvl].lru;
  const bool last = lvl + 1 == int(levels_.size());
  for (auto it = lru.rbegin(); it != lru.rend(); ++it) {
    Entry& v = **it;
    if (v.busy > 0) continue;
    const bool at_top = top(v) == lvl;
    if (at_top && v.pins > 0) continue;
    bool other_copy = false;
    for (int i = 0; i < int(levels_.size()); ++i) other_copy = other_copy || (i != lvl && has(v, i));
    if (!other_copy) {
      if (last) continue;
      Busy guard(v.busy);
      if (!demote(v, lvl)) continue;
    }
    drop(v, lvl);
    ++levels_[lvl].evictions;
    return true;
  }
  return false;
}

bool Pager::demote(Entry& e, int lvl) {
  if (has(e, lvl + 1)) return true;
  return place(e, lvl + 1);
}

bool Pager::place(Entry& e, int lvl) {
  auto r = reserve(lvl, e.nbytes);
  if (!r) return false;
  try {
    fill(e, lvl, *r);
  } catch (...) {
    if (levels_[lvl].kind == Kind::Device) levels_[lvl].used -= e.nbytes;
    if (levels_[lvl].kind == Kind::Host) slab_alloc_->release(*r);
    throw;
  }
  touch(e, lvl);
  return true;
}

at::Tensor Pager::host_view(const Entry& e) const {
  return typed_view(slab_.narrow(0, e.host_off, e.nbytes), e.dtype, e.shape);
}

void Pager::add_link(const std::string& name, int64_t bytes, double seconds) {
  LinkStat one;
  one.add(bytes, seconds);
  merge_link(name, one);
}

void Pager::merge_link(const std::string& name, const LinkStat& add) {
  if (add.transfers == 0) return;
  for (auto& kv : links_) {
    if (kv.first == name) {
      kv.second.bytes += add.bytes, kv.second.seconds += add.seconds, kv.second.transfers += add.transfers;
      return;
    }
  }
  links_.emplace_back(name, add);
}

at::Tensor Pager::read_ssd(Entry& e) {
  at::Tensor buf = aligned_host(e.ssd->padded);
  const auto t0 = std::chrono::steady_clock::now();
  ssd_->read(*e.ssd, buf.data_ptr(), e.nbytes, e.key);
  add_link("ssd->host", e.ssd->padded, seconds_since(t0));
  return typed_view(buf.narrow(0, 0, e.nbytes), e.dtype, e.shape);
}

void Pager::fill(Entry& e, int lvl, int64_t host_off) {
  const int src = top(e);
  const Kind from = levels_[src].kind, to = levels_[lvl].kind;
  if (to == Kind::Device) {
    if (from == Kind::Host) {
      e.dev = copier_->to_device(host_view(e), &e.dev_ready);
    } else {  // ssd: through a temporary aligned host buffer
      at::Tensor staged = read_ssd(e);
      std::shared_ptr<PendingCopy> pending;
      e.dev = copier_->to_device(staged, &pending);
      if (pending) pending->wait_host();
      e.dev_ready.reset();
    }
  } else if (to == Kind::Host) {
    if (from == Kind::Device) {
      if (e.dev_ready) e.dev_ready->wait_host();
      e.host_off = host_off;
      copier_->to_host(host_view(e), e.dev);
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      ssd_->read(*e.ssd, slab_base_ + host_off, e.nbytes, e.key);
      add_link("ssd->host", e.ssd->padded, seconds_since(t0));
      e.host_off = host_off;
    }
  } else {
    const void* data;
    at::Tensor staged;
    if (from == Kind::Host) {
      data = slab_base_ + e.host_off;
    } else {
      if (e.dev_ready) e.dev_ready->wait_host();
      staged = aligned_host(SsdStore::padded(e.nbytes));
      copier_->to_host(typed_view(staged.narrow(0, 0, e.nbytes), e.dtype, e.shape), e.dev);
      data = staged.data_ptr();
    }
    const auto t0 = std::chrono::steady_clock::now();
    SsdPage page = ssd_->write(e.id, data, e.nbytes);
    add_link("host->ssd", page.padded, seconds_since(t0));
    e.ssd = std::move(page);
  }
}

void Pager::drop(Entry& e, int lvl) {
  Level& L = levels_[lvl];
  if (L.kind == Kind::Device) {
    e.dev.reset();  // dev_ready stays: the host copy's drop must still wait for that copy
    L.used -= e.nbytes;
  } else if (L.kind == Kind::Host) {
    if (e.dev_ready) e.dev_ready->wait_host();  // a host->device copy may still read the slab
    slab_alloc_->release(e.host_off);
    e.host_off = -1;
  } else {
    ssd_->erase(*e.ssd);
    e.ssd.reset();
  }
  if (e.in_lru[lvl]) {
    L.lru.erase(e.pos[lvl]);
    e.in_lru[lvl] = false;
  }
}

void Pager::promote(Entry& e, int target) {
  Busy guard(e.busy);
  for (int lvl = top(e) - 1; lvl >= target; --lvl) {
    if (!place(e, lvl)) return;
  }
  touch(e, top(e));
}

std::string Pager::capacity_report() const {
  std::ostringstream os;
  for (size_t i = 0; i < levels_.size(); ++i) {
    const Level& L = levels_[i];
    int64_t pinned = 0;
    for (const Entry* e : L.lru) pinned += (e->pins > 0 && top(*e) == int(i)) ? 1 : 0;
    const int64_t cap = L.kind == Kind::Host ? slab_alloc_->size() : L.spec.capacity;
    os << (i ? "; " : "") << kind_name(L.kind) << ": " << mb(used(int(i))) << " of " << mb(cap) << " used, "
       << L.lru.size() << " entries (" << pinned << " pinned)";
    if (L.kind == Kind::Host) os << ", largest free block " << mb(slab_alloc_->largest_free());
  }
  return os.str();
}

void Pager::put(const std::string& key, const at::Tensor& tensor) {
  TORCH_CHECK_TYPE(tensor.defined(), "tensor: expected a tensor, got an undefined tensor");
  TORCH_CHECK_TYPE(tensor.layout() == at::kStrided, "tensor: expected a dense (strided) tensor, got layout ", tensor.layout());
  std::lock_guard<std::mutex> g(mu_);
  check_open();
  at::Tensor src = tensor.detach().contiguous();
  TORCH_CHECK_VALUE(src.device().is_cpu() || src.device().is_cuda(), "tensor: expected a CPU or CUDA tensor, got device ", src.device());
  auto e = std::make_unique<Entry>();
  e->id = next_id_++;
  e->key = key;
  e->dtype = src.scalar_type();
  e->shape = src.sizes().vec();
  e->nbytes = int64_t(src.nbytes());
  Busy guard(e->busy);
  bool placed = false;
  for (int lvl = 0; lvl < int(levels_.size()) && !placed; ++lvl) {
    auto r = reserve(lvl, e->nbytes);
    if (!r) continue;
    const Kind k = levels_[lvl].kind;
    try {
      if (k == Kind::Device) {
        e->dev = copier_->to_device(src, &e->dev_ready);
        if (e->dev_ready) {
          if (src.is_cuda()) e->dev_ready->wait_current_stream();  // caller's later writes come after
          else e->dev_ready->wait_host();                          // caller may reuse its host memory
        }
      } else if (k == Kind::Host) {
        e->host_off = *r;
        host_view(*e).copy_(src);
      } else {
        at::Tensor staged = aligned_host(SsdStore::padded(e->nbytes));
        at::Tensor cpu = src.cpu();
        if (e->nbytes > 0) std::memcpy(staged.data_ptr(), cpu.data_ptr(), size_t(e->nbytes));
        const auto t0 = std::chrono::steady_clock::now();
        SsdPage page = ssd_->write(e->id, staged.data_ptr(), e->nbytes);
        add_link("host->ssd", page.padded, seconds_since(t0));
        e->ssd = std::move(page);
      }
    } catch (...) {
      e->dev.reset();
      e->host_off = -1;
      if (k == Kind::Device) levels_[lvl].used -= e->nbytes;
      if (k == Kind::Host) slab_alloc_->release(*r);
      throw;
    }
    touch(*e, lvl);
    placed = true;
  }
  if (!placed) {
    std::ostringstream os;
    os << "VGPUStack.put('" << key << "'): " << mb(e->nbytes) << " do not fit in any level (" << capacity_report()
       << "); nothing was stored and nothing stored was lost. Free space with remove(), unpin() or add capacity.";
    throw CapacityError(os.str());
  }
  auto old = entries_.find(key);
  if (old != entries_.end()) {
    Entry& o = *old->second;
    for (int lvl = 0; lvl < int(levels_.size()); ++lvl) {
      if (has(o, lvl)) drop(o, lvl);
    }
    entries_.erase(old);
  }
  ++puts_;
  entries_.emplace(key, std::move(e));
}

at::Tensor Pager::materialize(Entry& e, const at::Device& device) {
  const int t = top(e);
  switch (levels_[t].kind) {
    case Kind::Device:
      if (e.dev_ready) e.dev_ready->wait_host();
      return e.dev.to(device, /*non_blocking=*/false, /*copy=*/true);
    case Kind::Host:
      return host_view(e).to(device, /*non_blocking=*/false, /*copy=*/true);
    default: {
      at::Tensor staged = read_ssd(e);
      return device.is_cpu() ? staged : staged.to(device);
    }
  }
}

at::Tensor Pager::get(const std::string& key, const std::optional<at::Device>& device) {
  std::lock_guard<std::mutex> g(mu_);
  check_open();
  Entry& e = find(key);
  Busy guard(e.busy);
  ++gets_;
  const int t = top(e);
  ++levels_[t].hits;
  for (int i = 0; i < t; ++i) ++levels_[i].misses;
  const Level& L0 = levels_[0];
  const at::Device home = L0.kind == Kind::Device ? L0.device : at::Device(at::kCPU);
  bool resident = !device.has_value();
  if (device.has_value() && L0.kind == Kind::Device && device->type() == home.type()) {
    resident = !device->has_index() || !home.has_index() || device->index() == home.index();
  }
  if (resident) {
    promote(e, 0);
    if (L0.kind == Kind::Device && has(e, 0)) {
      if (e.dev_ready) e.dev_ready->wait_current_stream();
      copier_->hand_out(e.dev);
      return e.dev;
    }
    touch(e, top(e));
    return materialize(e, home);
  }
  touch(e, t);
  return materialize(e, *device);
}

void Pager::prefetch(const std::vector<std::string>& keys) {
  std::lock_guard<std::mutex> g(mu_);
  check_open();
  for (const auto& k : keys) find(k);  // every key must exist before anything is queued
  for (const auto& k : keys) prefetch_queue_.push_back(k);
  prefetch_cv_.notify_one();
}

void Pager::prefetch_loop() {
  std::unique_lock<std::mutex> g(mu_);
  for (;;) {
    prefetch_cv_.wait(g, [this] { return stop_ || !prefetch_queue_.empty(); });
    if (stop_) return;
    const std::string key = std::move(prefetch_queue_.front());
    prefetch_queue_.pop_front();
    prefetch_busy_ = true;
    auto it = entries_.find(key);
    if (it != entries_.end()) {  // removed since it was queued: nothing to do
      try {
        promote(*it->second, 0);
        ++prefetched_;
      } catch (const std::exception& ex) {
        ++prefetch_errors_;
        last_prefetch_error_ = ex.what();
      }
    }
    prefetch_busy_ = false;
    if (prefetch_queue_.empty()) prefetch_idle_cv_.notify_all();
  }
}

void Pager::wait_prefetch() {
  std::unique_lock<std::mutex> g(mu_);
  prefetch_idle_cv_.wait(g, [this] { return closed_ || (prefetch_queue_.empty() && !prefetch_busy_); });
}

void Pager::pin(const std::string& key) {
  std::lock_guard<std::mutex> g(mu_);
  check_open();
  ++find(key).pins;
}

void Pager::unpin(const std::string& key) {
  std::lock_guard<std::mutex> g(mu_);
  check_open();
  Entry& e = find(key);
  TORCH_CHECK_VALUE(e.pins > 0, "unpin('", key, "'): the key is not pinned");
  --e.pins;
}

bool Pager::evict(const std::string& key) {
  std::lock_guard<std::mutex> g(mu_);
  check_open();
  Entry& e = find(key);
  TORCH_CHECK(e.pins == 0, "evict('", key, "'): the key is pinned (", e.pins, " pins); unpin() it first");
  const int t = top(e);
  if (t + 1 == int(levels_.size())) return false;
  Busy guard(e.busy);
  if (!demote(e, t)) {
    throw CapacityError("VGPUStack.evict('" + key + "'): the next level has no room (" + capacity_report() +
                        "); the key stays where it is");
  }
  drop(e, t);
  ++levels_[t].evictions;
  return true;
}

void Pager::remove(const std::string& key) {
  std::lock_guard<std::mutex> g(mu_);
  check_open();
  Entry& e = find(key);
  for (int lvl = 0; lvl < int(levels_.size()); ++lvl) {
    if (has(e, lvl)) drop(e, lvl);
  }
  entries_.erase(key);
}

bool Pager::contains(const std::string& key) {
  std::lock_guard<std::mutex> g(mu_);
  return !closed_ && entries_.count(key) > 0;
}

int Pager::level_of(const std::string& key) {
  std::lock_guard<std::mutex> g(mu_);
  check_open();
  return top(find(key));
}

std::vector<std::string> Pager::keys() {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<std::string> out;
  if (closed_) return out;
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

StatsSnapshot Pager::stats() {
  std::lock_guard<std::mutex> g(mu_);
  check_open();
  StatsSnapshot s;
  if (copier_) {
    LinkStat h2d, d2h;
    copier_->collect(h2d, d2h);
    merge_link("host->device", h2d);
    merge_link("device->host", d2h);
  }
  for (size_t i = 0; i < levels_.size(); ++i) {
    const Level& L = levels_[i];
    LevelStats ls;
    ls.kind = kind_name(L.kind);
    ls.device = L.kind == Kind::Device ? L.device.str() : L.kind == Kind::Host ? (host_pinned_ ? "pinned" : "cpu") : L.spec.path;
    ls.capacity = L.kind == Kind::Host ? slab_alloc_->size() : L.spec.capacity;
    ls.used = used(int(i));
    ls.entries = int64_t(L.lru.size());
    for (const Entry* e : L.lru) ls.pinned += (e->pins > 0 && top(*e) == int(i)) ? 1 : 0;
    ls.hits = L.hits, ls.misses = L.misses, ls.evictions = L.evictions;
    ls.speed_gbps = L.spec.speed_gbps;
    s.levels.push_back(ls);
  }
  s.links = links_;
  s.io_backend = io_ ? io_->name() : "";
  s.io_note = io_note_;
  s.ssd_dir = ssd_ ? ssd_->dir() : "";
  s.o_direct = ssd_ ? ssd_->direct() : false;
  s.checksum = checksum_name();
  s.host_pinned = host_pinned_;
  s.gets = gets_, s.puts = puts_, s.prefetched = prefetched_, s.prefetch_errors = prefetch_errors_;
  s.last_prefetch_error = last_prefetch_error_;
  return s;
}

void Pager::close() {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (closed_) return;
    stop_ = true;
  }
  prefetch_cv_.notify_all();
  if (prefetch_thread_.joinable()) prefetch_thread_.join();
  std::lock_guard<std::mutex> g(mu_);
  for (auto& kv : entries_) {
    if (kv.second->dev_ready) kv.second->dev_ready->wait_host();
  }
  entries_.clear();
  for (auto& L : levels_) {
    L.lru.clear();
    L.used = 0;
  }
  ssd_.reset();  // deletes the page files and the directory
  io_.reset();
  slab_alloc_.reset();
  slab_ = at::Tensor();
  slab_base_ = nullptr;
  copier_.reset();
  closed_ = true;
  prefetch_idle_cv_.notify_all();
}

bool Pager::closed() {
  std::lock_guard<std::mutex> g(mu_);
  return closed_;
}

}  // namespace apt::vgpu
