# Shared by setup.sh and build_caffe.sh: messages, the build cache and its key.

CAFFE_DEB_VERSION=1.0.0+git20180821.99bd997-8 # Debian's last Caffe source package (bullseye)
CAFFE_DEB_SUITE=bullseye
CAFFE_CACHE=${CAFFE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/caffe-toolkit}
setup_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

step() { printf '[setup] %s\n' "$*"; }

# ---- the system: /etc/os-release (OS_RELEASE overrides the path, for tests) ----------------------
OS_RELEASE=${OS_RELEASE:-/etc/os-release}
os_field() { sed -n "s/^$1=//p" "$OS_RELEASE" 2>/dev/null | head -1 | tr -d "\"'"; }
is_ubuntu() { [[ $(os_field ID) == ubuntu || " $(os_field ID_LIKE) " == *" ubuntu "* ]]; }

# The apt package lists for this system: the common list, then the release's own additions
# (debian-packages-<codename>.txt: bookworm, trixie; debian-packages-ubuntu.txt on Ubuntu).
debian_package_lists() {
  local codename
  codename=$(os_field VERSION_CODENAME)
  echo "$setup_dir/debian-packages.txt"
  if [[ -n $codename && -f $setup_dir/debian-packages-$codename.txt ]]; then
    echo "$setup_dir/debian-packages-$codename.txt"
  fi
  if is_ubuntu; then echo "$setup_dir/debian-packages-ubuntu.txt"; fi
  return 0
}

# Ubuntu (setup.sh, first): Ubuntu's mirrors do not carry Debian's Caffe source package, so the build
# would fail at the source fetch. Say what works there instead (README, "Ubuntu") and stop, unless the
# user already chose a way (CAFFE_ROOT or DEBIAN_MIRROR).
ubuntu_advice() {
  is_ubuntu || return 0
  local ver
  ver="$(os_field VERSION_ID) ($(os_field VERSION_CODENAME))"
  if [[ -n ${CAFFE_ROOT:-} ]]; then
    step "Ubuntu $ver: using CAFFE_ROOT=$CAFFE_ROOT (Ubuntu is not tested)"
    return 0
  fi
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then
    step "Ubuntu $ver: building Debian's Caffe source from DEBIAN_MIRROR=$DEBIAN_MIRROR (Ubuntu is not tested)"
    return 0
  fi
  cat <<ADVICE
[setup] This is Ubuntu $ver. make setup builds Caffe from Debian's source package, which Ubuntu's
[setup] mirrors do not carry, and Ubuntu has no Caffe package after 20.04. make setup is tested on
[setup] Debian 12 and 13 only; on Ubuntu (NOT TESTED):
[setup]  - Any release, no root needed: the bvlc-caffe wheel (make wheel on a Debian machine, or the file
[setup]    your course staff hands out) with a Python 3.11 or 3.13 (uv python install 3.13):
[setup]      make setup PYTHON=<that python> CAFFE_WHEEL=<the wheel's path or URL>
[setup]  - Ubuntu 24.04 (Python 3.12): fetch Debian's source package from a Debian mirror and build it:
[setup]      make setup DEBIAN_MIRROR=<a Debian mirror URL, e.g. one from Debian's mirror list>
[setup]    (it installs debian-archive-keyring to check the source; libraries as on Debian 12/13).
[setup]  - Ubuntu 22.04 (Python 3.10): too old for requirements.txt (numpy 2.4 needs Python $MIN_PYTHON+), and
[setup]    its Boost.Python serves Python 3.10 only. Use Debian 12 or 13 in a container, VM or chroot
[setup]    (tools/portability/debian-chroot.sh builds one).
[setup]  - A Caffe you built for this Python and NumPy 2: make setup CAFFE_ROOT=<its prefix>
ADVICE
  die "Ubuntu needs a choice" "-" "make setup CAFFE_WHEEL=<a bvlc-caffe wheel>, DEBIAN_MIRROR=<Debian mirror URL> (24.04), or CAFFE_ROOT=<a Caffe built for this Python>; see README, 'Install'"
}

# requirements.txt needs Python 3.11 or newer (numpy 2.4, scipy 1.17 and ipython 9 dropped 3.10).
MIN_PYTHON=3.11

# One line naming the step, the log and the fix; then stop.
die() {
  local what=$1 log=$2 fix=$3
  printf '[setup] FAILED: %s' "$what" >&2
  [[ $log != - ]] && printf ' (log: %s)' "$log" >&2
  printf '. Fix: %s\n' "$fix" >&2
  exit 1
}

# Caffe's CPU layers in parallel (patches/001*-openmp-*.patch): on unless CAFFE_OPENMP=0, which builds
# stock Caffe (with only the compatibility patches) into a prefix of its own.
CAFFE_OPENMP=${CAFFE_OPENMP:-1}

# The patch files of this build, in order, relative to tools/setup/.
caffe_patches() {
  local p
  for p in "$setup_dir"/patches/*.patch; do
    [[ $CAFFE_OPENMP == 0 && $(basename "$p") == *-openmp-* ]] && continue
    echo "patches/$(basename "$p")"
  done
  if [[ ${CAFFE_GPU:-0} == 1 ]]; then  # CUDA-only code: CPU builds skip them
    for p in "$setup_dir"/patches-cuda/*.patch; do echo "patches-cuda/$(basename "$p")"; done
  fi
  if [[ ${CAFFE_FOR_WHEEL:-0} == 1 ]]; then  # the wheel's build (tools/wheel/build_wheel.sh) only
    for p in "$setup_dir"/../wheel/patches/*.patch; do echo "../wheel/patches/$(basename "$p")"; done
  fi
}

# OpenBLAS built for OpenMP (Debian's libopenblas0-openmp): inside the layers' parallel loops it runs
# single-threaded (it asks omp_in_parallel), where the pthread build would start threads of its own on
# top of OpenMP's. Linked by path, so the binaries find it through their RPATH whichever OpenBLAS the
# system's alternatives point libopenblas.so.0 at.
openblas_openmp_lib() {
  local lib
  lib=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/openblas-openmp/libopenblas.so.0
  [[ -f $lib ]] || die "finding OpenBLAS for OpenMP" "-" \
    "apt-get install libopenblas0-openmp (make setup does), or CAFFE_OPENMP=0 for stock Caffe"
  echo "$lib"
}

# Caffe's configure flags (build_caffe.sh adds the prefix and the Python paths).
caffe_cmake_flags() {
  echo -DCMAKE_BUILD_TYPE=Release -DBLAS=Open -DBUILD_python=ON -DBUILD_python_layer=ON -Dpython_version=3 \
    -DUSE_OPENCV=ON -DUSE_LMDB=ON -DUSE_LEVELDB=ON -DUSE_HDF5=ON -DBUILD_docs=OFF -DBUILD_matlab=OFF
  if [[ $CAFFE_OPENMP != 0 ]]; then
    echo -DUSE_OPENMP=ON -DOpenBLAS_LIB="$(openblas_openmp_lib)"
  fi
  if [[ ${CAFFE_FOR_WHEEL:-0} == 1 ]]; then
    # no libpython linked, the tools as Python modules (patch 0021); the reduced OpenCV (build_opencv.sh)
    echo -DBUILD_python_wheel=ON -DOpenCV_DIR="${OPENCV_DIR:?the wheel build needs OPENCV_DIR}"
  fi
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
#   source version, recipe (patch files + configure flags), Python and numpy versions, CPU/GPU, OpenMP.
build_key() {
  local python=$1 recipe pyver variant
  recipe=$({ for p in $(caffe_patches); do cat "$setup_dir/$p"; done; caffe_cmake_flags
    [[ ${CAFFE_GPU:-0} == 1 ]] && cat "$setup_dir/cuda-libraries.txt"; } | sha256sum | cut -c1-10)
  pyver=$("$python" -c 'import sys, numpy; print("py%d.%d.%d-np%s" % (sys.version_info[:3] + (numpy.__version__,)))')
  if [[ ${CAFFE_GPU:-0} == 1 ]]; then variant=gpu-sm$(cuda_arch); else variant=cpu; fi
  [[ $CAFFE_OPENMP == 0 ]] && variant=$variant-stock
  [[ ${CAFFE_FOR_WHEEL:-0} == 1 ]] && variant=$variant-wheel
  echo "caffe-${CAFFE_DEB_VERSION//+/-}-$recipe-$pyver-$variant"
}

# Debian's source package unpacked (with Debian's patches) into DEST, then ours: PATCHES (relative to
# tools/setup/), default those of this build. Used by build_caffe.sh and selftest.sh alike.
unpack_patched_source() {
  local dest=$1 patches=${2:-$(caffe_patches | tr '\n' ' ')} p source
  # the .dsc, or the debian.tar where the mirror lost the .dsc (fetch_debian_source)
  source=$(compgen -G "$CAFFE_CACHE/src/caffe_${CAFFE_DEB_VERSION}.dsc" ||
    compgen -G "$CAFFE_CACHE/src/caffe_${CAFFE_DEB_VERSION}.debian.tar.*") || return 1
  unpack_debian_source "${source%%$'\n'*}" "$dest" || return 1
  for p in $patches; do
    echo "== $p" && patch -d "$dest" -p1 --forward --batch <"$setup_dir/$p" || return 1
  done
}

# ---- Debian source packages ---------------------------------------------------------------------
# The Debian mirror this machine's apt uses (never a host name written in the repo), or DEBIAN_MIRROR.
debian_mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
  apt-get indextargets --format '$(ORIGIN) $(CODENAME) $(REPO_URI)' 2>/dev/null |
    awk -v c="$(os_field VERSION_CODENAME)" '$1 == "Debian" && $2 == c { print $3; exit }'
}

# fetch_debian_source PACKAGE VERSION SUITE [NAME]: PACKAGE's source (.dsc and tarballs) into $CAFFE_CACHE/src,
# once, through a private apt configuration (own sources file, lists and cache under $CAFFE_CACHE/apt-SUITE),
# so the machine's apt sources stay untouched and no root is needed. VERSION may be empty (the suite's).
# Prints the .dsc's path (or, from a mirror that lost the .dsc, the debian.tar's: see below).
fetch_debian_source() {
  local package=$1 version=$2 suite=$3 name=${4:-$1} dsc
  local dir=$CAFFE_CACHE/apt-$suite log=$CAFFE_CACHE/logs/fetch-source-$package.log
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$CAFFE_CACHE/src" "$CAFFE_CACHE/logs"
  dsc=$(compgen -G "$CAFFE_CACHE/src/${package}_${version:-*}.dsc" | sort -V | tail -1 || true)
  if [[ -n $dsc ]]; then echo "$dsc"; return; fi
  local mirror
  mirror=$(debian_mirror)
  [[ -n $mirror ]] ||
    die "finding the Debian mirror" "-" "run 'apt-get update' once, or set DEBIAN_MIRROR=<your Debian mirror URL>"
  step "fetching the $package${version:+=$version} source from $mirror ($suite)" >&2
  # Debian's archive keys check the source: on Debian they are trusted anyway; on Ubuntu only this way
  # (debian-archive-keyring, from debian-packages-ubuntu.txt).
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg signed_by=
  [[ -f $keyring ]] && signed_by="[signed-by=$keyring] "
  echo "deb-src $signed_by${mirror%/} $suite main" >"$dir/sources.list"
  local apt=(apt-get -o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache")
  ((EUID == 0)) && apt+=(-o APT::Sandbox::User=root)
  local fetched=1
  {
    "${apt[@]}" update &&
      (cd "$CAFFE_CACHE/src" && "${apt[@]}" source --download-only "$package${version:+=$version}")
  } >"$log" 2>&1 || fetched=0
  dsc=$(compgen -G "$CAFFE_CACHE/src/${package}_${version:-*}.dsc" | sort -V | tail -1 || true)
  if ((fetched)) && [[ -n $dsc ]]; then
    echo "$dsc"
    return
  fi
  # A mirror that lost only the .dsc (seen here: trixie's opencv_4.10.0+dfsg-5.dsc answered 404 while its
  # tarballs came): apt checked each tarball against the signed Sources index, so they are the release's;
  # the debian.tar's path stands in for the .dsc, and unpack_debian_source unpacks them as dpkg-source would.
  local debian_tar
  debian_tar=$(compgen -G "$CAFFE_CACHE/src/${package}_${version:-*}.debian.tar.*" | sort -V | tail -1 || true)
  if grep -q "${package}_.*\.dsc .*404" "$log" && [[ -n $debian_tar ]] && compgen -G "$CAFFE_CACHE/src/${package}_*.orig.tar.*" >/dev/null; then
    step "the mirror has no .dsc for $package: using its checked tarballs ($(basename "$debian_tar"))" >&2
    echo "$debian_tar"
    return
  fi
  die "fetching the $name source package" "$log" "check that the mirror serves '$suite' (or set DEBIAN_MIRROR), then rerun"
}

# unpack_debian_source SOURCE DEST: a source package (its .dsc, or the debian.tar that fetch_debian_source gives
# when the mirror lost the .dsc) unpacked into DEST with Debian's patches applied, as `dpkg-source -x` does.
unpack_debian_source() {
  local source=$1 dest=$2
  if [[ $source == *.dsc ]]; then
    dpkg-source -x "$source" "$dest"
    return
  fi
  local base=${source%.debian.tar.*} orig p
  orig=$(compgen -G "${base%-*}.orig.tar.*" | head -1) || return 1
  mkdir -p "$dest"
  tar -xf "$orig" --strip-components=1 -C "$dest" && tar -xf "$source" -C "$dest" || return 1
  [[ -f $dest/debian/patches/series ]] || return 0
  while read -r p _; do
    [[ -z $p || $p == \#* ]] && continue
    echo "applying $p" && patch -d "$dest" -p1 --batch <"$dest/debian/patches/$p" || return 1
  done <"$dest/debian/patches/series"
}

# The Debian version of a source package file (.dsc or NAME_VERSION.debian.tar.*).
debian_source_version() {
  local source=$1
  if [[ $source == *.dsc ]]; then sed -n 's/^Version: //p' "$source"; return; fi
  source=$(basename "$source")
  source=${source#*_}
  echo "${source%.debian.tar.*}"
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
