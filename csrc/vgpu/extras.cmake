# VGPU pager: optional system libraries, built in so that a wheel runs where they are not installed.
#  - liburing (io_uring SSD backend): linked statically (liburing.a, its symbols kept private);
#    with only the shared library the module needs liburing at run time (the build says so);
#    without liburing the pread/pwrite thread pool is the only backend.
#  - xxhash (XXH3-64 page checksums): header-only (XXH_INLINE_ALL in checksum.cpp), no library;
#    without xxhash.h zlib's CRC-32 is used.
find_path(APT_LIBURING_INCLUDE liburing.h)
find_library(APT_LIBURING_STATIC NAMES liburing.a)
find_library(APT_LIBURING_SHARED NAMES uring)
if(APT_LIBURING_INCLUDE AND (APT_LIBURING_STATIC OR APT_LIBURING_SHARED))
  target_include_directories(_C PRIVATE "${APT_LIBURING_INCLUDE}")
  target_compile_definitions(_C PRIVATE APT_HAVE_LIBURING=1)
  if(APT_LIBURING_STATIC)
    target_link_libraries(_C PRIVATE "${APT_LIBURING_STATIC}")
    target_link_options(_C PRIVATE "LINKER:--exclude-libs,liburing.a")
    message(STATUS "apt_ext: vgpu: io_uring backend enabled (static ${APT_LIBURING_STATIC})")
  else()
    target_link_libraries(_C PRIVATE "${APT_LIBURING_SHARED}")
    message(STATUS "apt_ext: vgpu: io_uring backend enabled (shared ${APT_LIBURING_SHARED}: the module "
                   "needs liburing at run time; install liburing-dev for a self-contained build)")
  endif()
else()
  message(STATUS "apt_ext: vgpu: liburing not found: SSD tier uses the pread/pwrite thread pool only")
endif()

find_path(APT_XXHASH_INCLUDE xxhash.h)
if(APT_XXHASH_INCLUDE)
  target_include_directories(_C PRIVATE "${APT_XXHASH_INCLUDE}")
  target_compile_definitions(_C PRIVATE APT_HAVE_XXHASH=1)
  message(STATUS "apt_ext: vgpu: XXH3-64 page checksums (header-only ${APT_XXHASH_INCLUDE}/xxhash.h)")
else()
  find_package(ZLIB)
  if(ZLIB_FOUND)
    target_link_libraries(_C PRIVATE ZLIB::ZLIB)
    target_compile_definitions(_C PRIVATE APT_HAVE_ZLIB=1)
    message(STATUS "apt_ext: vgpu: xxhash.h not found: CRC-32 (zlib) page checksums")
  else()
    message(FATAL_ERROR "apt_ext: vgpu: neither xxhash.h nor zlib was found; install libxxhash-dev "
                        "(or zlib1g-dev) for the SSD tier's page checksums")
  endif()
endif()
