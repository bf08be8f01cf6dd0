#!/usr/bin/env bash
# Build BVLC Caffe from Debian's source package and install it into PREFIX.
#
#   build_caffe.sh PREFIX      (PYTHON_FOR_CAFFE: the venv's python; CAFFE_GPU=1: CUDA build)
#
# The source comes from the Debian archive the machine's apt already uses, through a private apt
# configuration (own sources file, lists and cache), so the machine's apt sources stay untouched.
# dpkg-source applies Debian's patches (Python 3, boost-python naming, BLAS); patches/ holds ours.
# Everything happens in a staging folder; PREFIX appears only once the build is complete.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/setup/common.sh
source "$here/common.sh"

prefix=${1:?usage: build_caffe.sh PREFIX}
python=${PYTHON_FOR_CAFFE:-python3}
logs=$CAFFE_CACHE/logs
mkdir -p "$logs"

python_cmake_flags() {
  # Point CMake at the venv's own interpreter, headers and libpython, so pycaffe is compiled for the
  # numpy it will run with and no second libpython gets linked in.
  "$python" - <<'EOF'
import os, sys, sysconfig
libdir, ldlib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
lib = os.path.join(libdir, ldlib)
if not lib.endswith(".so") or not os.path.exists(lib):
    sys.exit(f"{sys.executable} has no shared libpython ({lib}); use a Python built with --enable-shared")
print(f"-DPYTHON_EXECUTABLE={sys.executable}")
print(f"-DPYTHON_LIBRARY={lib}")
print(f"-DPYTHON_INCLUDE_DIR={sysconfig.get_paths()['include']}")
EOF
}

# The CUDA toolkit's root: CUDA_HOME, /usr/local/cuda, or where the `nvcc` on PATH lives (that one may
# be a wrapper script, so each candidate must hold bin/nvcc and include/cuda_runtime.h).
cuda_home() {
  local nvcc candidates=()
  [[ -n ${CUDA_HOME:-} ]] && candidates+=("$CUDA_HOME")
  candidates+=(/usr/local/cuda)
  nvcc=$(command -v nvcc || true)
  [[ -n $nvcc ]] && candidates+=("$(dirname "$(dirname "$(readlink -f "$nvcc")")")")
  for root in "${candidates[@]}"; do
    if [[ -x $root/bin/nvcc && -f $root/include/cuda_runtime.h ]]; then
      echo "$root"
      return
    fi
  done
  die "finding CUDA" "-" "install the CUDA toolkit (nvcc) or set CUDA_HOME; or build for the CPU"
}

# cuBLAS/cuRAND/NCCL when the toolkit lacks them: NVIDIA's wheels (pinned in cuda-libraries.txt), unpacked
# once into the cache. Prints the folder holding include/ and lib/.
cuda_libraries() {
  local pins=$here/cuda-libraries.txt dest log=$logs/cuda-libraries.log
  dest=$CAFFE_CACHE/cuda-libraries-$(sha256sum "$pins" | cut -c1-10)
  if [[ ! -f $dest/.complete ]]; then
    local tmp
    tmp=$(mktemp -d "$CAFFE_CACHE/cuda-libraries.XXXXXX")
    (
      "$python" -m pip download --no-deps --only-binary=:all: -r "$pins" -d "$tmp/wheels" &&
        for w in "$tmp"/wheels/*.whl; do "$python" -m zipfile -e "$w" "$tmp/unpacked" || exit 1; done &&
        mkdir -p "$tmp/out/include" "$tmp/out/lib" &&
        for d in "$tmp"/unpacked/nvidia/*/; do cp -r "$d"include/. "$tmp/out/include/" && cp -r "$d"lib/. "$tmp/out/lib/"; done &&
        for so in "$tmp"/out/lib/lib*.so.*; do ln -sf "$(basename "$so")" "${so%%.so.*}.so"; done
    ) >"$log" 2>&1 || { rm -rf "$tmp"; die "fetching cuBLAS/cuRAND" "$log" "check the pins in $pins against PyPI"; }
    touch "$tmp/out/.complete"
    rm -rf "$dest" && mv "$tmp/out" "$dest" && rm -rf "$tmp"
  fi
  echo "$dest"
}

fetch_debian_source caffe "$CAFFE_DEB_VERSION" "$CAFFE_DEB_SUITE" Caffe >/dev/null

staging=$(mktemp -d "$CAFFE_CACHE/build.XXXXXX")
trap 'rm -rf "$staging"' EXIT
src=$staging/src

step "unpacking and patching"
log=$logs/patch.log
patch_set=$(caffe_patches | tr '\n' ' ')
unpack_patched_source "$src" "$patch_set" >"$log" 2>&1 || die "unpacking/patching the Caffe source" "$log" \
  "a patch in tools/setup/patches no longer applies to caffe=$CAFFE_DEB_VERSION: refresh it"

step "configuring (cmake)"
log=$logs/cmake.log
pyflags_text=$(python_cmake_flags 2>"$log") ||
  die "finding Python for the build" "$log" "see the log; PYTHON=/path/to/python3 picks another interpreter"
mapfile -t pyflags <<<"$pyflags_text"
read -ra flags <<<"$(caffe_cmake_flags | tr '\n' ' ')"
flags+=(-DCMAKE_INSTALL_PREFIX="$prefix" "${pyflags[@]}")
if [[ ${CAFFE_GPU:-0} == 1 ]]; then
  cuda=$(cuda_home)
  flags+=(-DCUDA_TOOLKIT_ROOT_DIR="$cuda")
  if [[ ! -f $cuda/include/cublas_v2.h || ! -f $cuda/include/curand.h || ! -f $cuda/include/nccl.h ]]; then
    extra=$(cuda_libraries)
    export NCCL_DIR=$extra  # Caffe's FindNCCL looks there
    # FindCUDA forgets libraries passed in by name when it first sees the toolkit; it searches CMAKE_LIBRARY_PATH
    flags+=(-DCMAKE_LIBRARY_PATH="$extra/lib" -DCUDA_NVCC_FLAGS="-I$extra/include" -DCMAKE_CXX_FLAGS="-I$extra/include")
  fi
fi
mkdir -p "$staging/build"
(cd "$staging/build" && cmake "${flags[@]}" "$src") >>"$log" 2>&1 ||
  die "cmake" "$log" "install the missing -dev package the log names (see tools/setup/debian-packages.txt)"
if [[ ${CAFFE_GPU:-0} == 1 ]] && grep -q "CUDA is not detected" "$log"; then
  die "cmake found no usable CUDA" "$log" "set CUDA_HOME to the CUDA toolkit's folder"  # Caffe would quietly build for the CPU
fi

step "compiling with $(nproc) jobs (log: $logs/build.log)"
log=$logs/build.log
make -C "$staging/build" -j"$(nproc)" all >"$log" 2>&1 ||
  die "compiling Caffe" "$log" "the first 'error:' in the log names the file; fix it with a patch in tools/setup/patches"

step "installing"
log=$logs/install.log
make -C "$staging/build" install DESTDIR="$staging/dest" >"$log" 2>&1 ||
  die "make install" "$log" "see the log"
staged=$staging/dest$prefix
if [[ ${CAFFE_FOR_WHEEL:-0} == 1 ]]; then  # the tools are Python modules (patch 0021)
  LD_LIBRARY_PATH=$staged/lib PYTHONPATH=$staged/lib/python3/dist-packages "$python" -c \
    'import sys, caffe_tools.tool_caffe as t; sys.exit(t.main(["caffe", "--version"]))' >>"$log" 2>&1 ||
    die "running the built caffe tool module" "$log" "see the log"
else
  LD_LIBRARY_PATH=$staged/lib "$staged/bin/caffe" --version >>"$log" 2>&1 ||
    die "running the built caffe binary" "$log" "see the log"
fi
{
  echo "caffe_deb_version=$CAFFE_DEB_VERSION"
  echo "variant=$([[ ${CAFFE_GPU:-0} == 1 ]] && echo "gpu sm_$(cuda_arch)" || echo cpu)"
  echo "openmp=$([[ $CAFFE_OPENMP == 0 ]] && echo 0 || echo 1)"
  echo "wheel=${CAFFE_FOR_WHEEL:-0}"
  echo "patches=$patch_set"
  echo "cmake_flags=${flags[*]}"
  echo "built=$(date -u +%FT%TZ)"
} >"$staged/.complete"
rm -rf "$prefix" # a leftover without .complete is never reused
mkdir -p "$(dirname "$prefix")"
mv "$staged" "$prefix"
step "installed $prefix"
