#!/usr/bin/env bash
# Prepares .devtools/ (git-ignored through .git/info/exclude) for the GPU machine, which has no
# network: the liburing and libxxhash Debian packages (so the VGPU pager builds its io_uring
# backend there), a static fio binary (the SSD benchmark's peer beside dd), the pytest-xdist
# wheels (gpu_session.sh's test stage runs tests/gpu in several processes) and bitsandbytes
# (fp4_linear.py's bnb-fp4 / bnb-nf4 peers) as a tarball of its package with the CUDA 13.0 and
# CPU libraries only (its wheel, 43 MB with every CUDA version's library, would not fit the
# device tool's 64 MiB working tree beside a carried _C*.so). Run here, then carry ".devtools"
# with the device call; benchmarks/gpu_session.sh unpacks and uses it.
# A device build's gzipped _C*.so (gpu_session.sh's build stage puts it in $OUT) copied to
# .devtools/so/ is unpacked into apt_ext/ there when apt_ext has none (no build stage needed).
#   bash tools/fetch_device_tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.devtools/" .git/info/exclude 2>/dev/null || echo "/.devtools/" >> .git/info/exclude
mkdir -p .devtools/debs .devtools/bin .devtools/wheels
echo "fetch_device_tools: Debian packages liburing-dev liburing2 libxxhash-dev libxxhash0"
(cd .devtools/debs && apt-get download -q liburing-dev liburing2 libxxhash-dev libxxhash0)
if [ ! -x .devtools/bin/fio ]; then
  echo "fetch_device_tools: building a static fio from Debian's source package"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial"
  echo "deb-src http://deb.debian.org/debian bookworm main" > "$work/sources.list"
  apt_opts=(-q -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$work/lists")
  apt-get "${apt_opts[@]}" update >/dev/null
  (cd "$work" && apt-get "${apt_opts[@]}" source --download-only fio >/dev/null && tar xzf fio_*.orig.tar.gz)
  (cd "$work"/fio-*/ && ./configure --build-static --disable-numa --disable-rdma --disable-gfapi \
      --disable-rados --disable-rbd --disable-http --disable-pmem --disable-libnfs --disable-native \
      --disable-xnvme --disable-libzbc --disable-tcmalloc --disable-dfs >/dev/null \
    && make -j"$(nproc)" >/dev/null && cp fio "$OLDPWD/.devtools/bin/fio")
fi
echo "fetch_device_tools: wheels pytest-xdist execnet"
python3 -m pip download -q --no-deps -d .devtools/wheels pytest-xdist execnet
echo "fetch_device_tools: bitsandbytes 0.50.2 for the device's Python 3.12 and CUDA 13.0"
bnb=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_24_x86_64 -d "$bnb" bitsandbytes==0.50.2
(cd "$bnb" && unzip -q bitsandbytes-*.whl && find bitsandbytes -name 'libbitsandbytes_*.so' \
   ! -name 'libbitsandbytes_cuda130.so' ! -name 'libbitsandbytes_cpu.so' -delete)
mkdir -p .devtools/site
tar czf .devtools/site/bitsandbytes-0.50.2-cu130.tgz -C "$bnb" bitsandbytes bitsandbytes-0.50.2.dist-info
rm -rf "$bnb"
ls -la .devtools/debs .devtools/bin .devtools/wheels
echo "fetch_device_tools: ready; carry \".devtools\" in the device call"
