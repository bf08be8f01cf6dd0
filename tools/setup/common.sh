# Shared by setup.sh and build_caffe.sh: messages, the build cache and its key.

CAFFE_DEB_VERSION=1.0.0+git20180821.99bd997-8 # Debian's last Caffe source package (bullseye)
CAFFE_DEB_SUITE=bullseye
CAFFE_CACHE=${CAFFE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/caffe-toolkit}
setup_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

step() { printf '[setup] %s\n' "$*"; }

# One line naming the step, the log and the fix; then stop.
die() {
  local what=$1 log=$2 fix=$3
  printf '[setup] FAILED: %s' "$what" >&2
  [[ $log != - ]] && printf ' (log: %s)' "$log" >&2
  printf '. Fix: %s\n' "$fix" >&2
  exit 1
}

# Caffe's configure flags (build_caffe.sh adds the prefix and the Python paths).
caffe_cmake_flags() {
  echo -DCMAKE_BUILD_TYPE=Release -DBLAS=Open -DBUILD_python=ON -DBUILD_python_layer=ON -Dpython_version=3 \
    -DUSE_OPENCV=ON -DUSE_LMDB=ON -DUSE_LEVELDB=ON -DUSE_HDF5=ON -DBUILD_docs=OFF -DBUILD_matlab=OFF
  if [[ ${CAFFE_GPU:-0} == 1 ]]; then
    local arch
    arch=$(cuda_arch)
    # Caffe's CMake knows only old architectures, and its cuDNN code predates cuDNN 8.
    echo -DCPU_ONLY=OFF -DUSE_CUDNN=OFF -DUSE_NCCL=ON -DCUDA_ARCH_NAME=Manual -DCUDA_ARCH_BIN="$arch" \
      -DCUDA_ARCH_PTX="$arch"
  else
    echo -DCPU_ONLY=ON
  fi
}

# The cache key: a rebuild happens exactly when one of these changes:
#   source version, recipe (patch files + configure flags), Python and numpy versions, CPU/GPU.
build_key() {
  local python=$1 recipe pyver variant
  recipe=$({ cat "$setup_dir"/patches/*.patch; caffe_cmake_flags; [[ ${CAFFE_GPU:-0} == 1 ]] &&
    cat "$setup_dir"/patches-cuda/*.patch "$setup_dir/cuda-libraries.txt"; } | sha256sum | cut -c1-10)
  pyver=$("$python" -c 'import sys, numpy; print("py%d.%d.%d-np%s" % (sys.version_info[:3] + (numpy.__version__,)))')
  if [[ ${CAFFE_GPU:-0} == 1 ]]; then variant=gpu-sm$(cuda_arch); else variant=cpu; fi
  echo "caffe-${CAFFE_DEB_VERSION//+/-}-$recipe-$pyver-$variant"
}

# Compute capability for the CUDA build: CUDA_ARCH, else the first GPU nvidia-smi sees.
cuda_arch() {
  if [[ -n ${CUDA_ARCH:-} ]]; then echo "${CUDA_ARCH//./}"; return; fi
  if command -v nvidia-smi >/dev/null; then
    local cc
    cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
    [[ -n $cc ]] && { echo "$cc"; return; }
  fi
  die "CUDA architecture" "-" "no GPU visible to nvidia-smi: set CUDA_ARCH (e.g. CUDA_ARCH=90 for Hopper)"
}

# Where a Caffe install keeps its Python package (Debian's patch moves it to lib/python3/dist-packages).
caffe_python_dir() {
  local prefix=$1
  for d in "$prefix/lib/python3/dist-packages" "$prefix/python"; do
    [[ -d $d/caffe ]] && { echo "$d"; return; }
  done
  echo "$prefix/python"
}
