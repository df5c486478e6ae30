// pybind11 bindings of the pager: apt_ext._C.VGPUPager and the VGPU exception classes.
// apt_ext/vgpu/stack.py wraps them in the public VGPUStack.
#include <torch/csrc/utils/pybind.h>  // at::Tensor, ScalarType, Device <-> Python

#include "bindings.h"
#include "vgpu/checksum.h"
#include "vgpu/pager.h"

namespace py = pybind11;

namespace apt::vgpu {
namespace {

py::dict stats_dict(const StatsSnapshot& s) {
  py::list levels;
  for (const auto& l : s.levels) {
    py::dict d;
    d["kind"] = l.kind;
    d["device"] = l.device;
    d["capacity_bytes"] = l.capacity;
    d["used_bytes"] = l.used;
    d["entries"] = l.entries;
    d["pinned_entries"] = l.pinned;
    d["hits"] = l.hits;
    d["misses"] = l.misses;
    d["evictions"] = l.evictions;
    d["nominal_speed_gbps"] = l.speed_gbps;
    levels.append(d);
  }
  py::dict links;
  for (const auto& kv : s.links) {
    py::dict d;
    d["bytes"] = kv.second.bytes;
    d["seconds"] = kv.second.seconds;
    d["transfers"] = kv.second.transfers;
    d["gbps"] = kv.second.seconds > 0 ? double(kv.second.bytes) / kv.second.seconds / 1e9 : 0.0;
    links[py::str(kv.first)] = d;
  }
  py::dict out;
  out["levels"] = levels;
  out["links"] = links;
  out["io_backend"] = s.io_backend;
  out["io_note"] = s.io_note;
  out["ssd_dir"] = s.ssd_dir;
  out["o_direct"] = s.o_direct;
  out["checksum"] = s.checksum;
  out["host_pinned"] = s.host_pinned;
  out["gets"] = s.gets;
  out["puts"] = s.puts;
  out["prefetched"] = s.prefetched;
  out["prefetch_errors"] = s.prefetch_errors;
  out["last_prefetch_error"] = s.last_prefetch_error;
  return out;
}

void bind_vgpu(py::module_& m) {
#ifdef APT_HAVE_LIBURING
  apt::set_build_flag("vgpu_io_uring", true);
#else
  apt::set_build_flag("vgpu_io_uring", false);
#endif
#ifdef APT_HAVE_XXHASH
  apt::set_build_flag("vgpu_xxhash", true);
#else
  apt::set_build_flag("vgpu_xxhash", false);
#endif
  static py::exception<CapacityError> capacity_error(m, "VGPUCapacityError", PyExc_RuntimeError);
  static py::exception<ChecksumError> checksum_error(m, "VGPUChecksumError", PyExc_RuntimeError);
  static py::exception<IoError> io_error(m, "VGPUIOError", PyExc_OSError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const CapacityError& e) {
      PyErr_SetString(capacity_error.ptr(), e.what());
    } catch (const ChecksumError& e) {
      PyErr_SetString(checksum_error.ptr(), e.what());
    } catch (const IoError& e) {
      // OSError(errno, message) so that .errno is ENOSPC, EIO, ...
      const py::object& cls = io_error;
      py::object err = cls(e.err, e.what());
      PyErr_SetObject(cls.ptr(), err.ptr());
    } catch (const MissingKey& e) {
      PyErr_SetString(PyExc_KeyError, e.what());
    }
  });

  py::class_<LevelSpec>(m, "VGPULevelSpec")
      .def(py::init([](std::string kind, std::string device, int64_t capacity, std::string path, double speed) {
             return LevelSpec{std::move(kind), std::move(device), capacity, std::move(path), speed};
           }),
           py::arg("kind"), py::arg("device"), py::arg("capacity_bytes"), py::arg("path"), py::arg("speed_gbps"));

  py::class_<Pager>(m, "VGPUPager")
      .def(py::init<const std::vector<LevelSpec>&, const std::string&, int, int64_t>(), py::arg("levels"),
           py::arg("io_backend"), py::arg("queue_depth"), py::arg("io_chunk_bytes"))
      .def("put", &Pager::put, py::arg("key"), py::arg("tensor"), py::call_guard<py::gil_scoped_release>())
      .def("get", &Pager::get, py::arg("key"), py::arg("device"), py::call_guard<py::gil_scoped_release>())
      .def("prefetch", &Pager::prefetch, py::arg("keys"), py::call_guard<py::gil_scoped_release>())
      .def("wait_prefetch", &Pager::wait_prefetch, py::call_guard<py::gil_scoped_release>())
      .def("pin", &Pager::pin, py::arg("key"), py::call_guard<py::gil_scoped_release>())
      .def("unpin", &Pager::unpin, py::arg("key"), py::call_guard<py::gil_scoped_release>())
      .def("evict", &Pager::evict, py::arg("key"), py::call_guard<py::gil_scoped_release>())
      .def("remove", &Pager::remove, py::arg("key"), py::call_guard<py::gil_scoped_release>())
      .def("contains", &Pager::contains, py::arg("key"), py::call_guard<py::gil_scoped_release>())
      .def("level_of", &Pager::level_of, py::arg("key"), py::call_guard<py::gil_scoped_release>())
      .def("keys", &Pager::keys, py::call_guard<py::gil_scoped_release>())
      .def("stats", [](Pager& p) {
        StatsSnapshot s;
        {
          py::gil_scoped_release nogil;
          s = p.stats();
        }
        return stats_dict(s);
      })
      .def("close", &Pager::close, py::call_guard<py::gil_scoped_release>())
      .def("closed", &Pager::closed);
  m.attr("vgpu_checksum") = checksum_name();
}

APT_REGISTER_BINDINGS(bind_vgpu);

}  // namespace
}  // namespace apt::vgpu
