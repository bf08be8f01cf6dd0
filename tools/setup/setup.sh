#!/usr/bin/env bash
# `make setup`: everything the toolkit needs, idempotent. A second run only checks (seconds).
#
#   W. With a wheel (CAFFE_WHEEL=path-or-URL, or a bvlc_caffe wheel in dist/ for this Python): no apt,
#      no compiler, no root: .venv with requirements.txt, then `pip install` of the wheel; steps 0-4
#      are skipped. CAFFE_WHEEL=0 ignores dist/ and builds from source.
#   0. On Ubuntu, without CAFFE_ROOT or DEBIAN_MIRROR: prints what to do there and stops.
#   1. Debian packages (tools/setup/debian-packages.txt, plus debian-packages-<codename>.txt for the
#      release /etc/os-release names): installs the missing ones.
#   2. .venv with the pinned Python packages (requirements.txt + constraints.txt).
#   3. BVLC Caffe, built from Debian's source package by build_caffe.sh into a prefix outside the
#      clone, keyed by source version + patches + Python/numpy + CPU/GPU (skipped when CAFFE_ROOT
#      points at a Caffe you already have).
#   4. Wires Caffe into .venv: a .pth file for `import caffe`, and the binaries in .venv/bin.
#
# Variables: CAFFE_WHEEL (a bvlc_caffe wheel file or URL; 0: build from source even if dist/ has one),
# PYTHON (interpreter for .venv, default python3), CAFFE_CACHE (build cache, default
# ~/.cache/caffe-toolkit), CAFFE_ROOT (use this Caffe install instead of building one),
# CAFFE_GPU=1 (CUDA build), CUDA_ARCH (e.g. 90; default from nvidia-smi), DEBIAN_MIRROR (where
# to fetch Debian's Caffe source; needed on Ubuntu), OS_RELEASE (the os-release file, for tests).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tools/setup/common.sh
source "$here/common.sh"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-$repo/.venv}
# the Caffe binaries a source build links into .venv/bin (a wheel brings its own console scripts)
CAFFE_TOOLS=(caffe compute_image_mean convert_imageset upgrade_net_proto_text upgrade_solver_proto_text)
[[ $VENV == /* ]] || VENV=$PWD/$VENV
# Logs: the build cache's; with a wheel, results/setup-logs in the clone (a wheel set-up writes nothing
# outside the clone but pip's cache)
logs=$CAFFE_CACHE/logs

# ---- 1. Debian packages ------------------------------------------------------------------------
install_debian_packages() {
  local wanted missing=() lists
  mapfile -t lists < <(debian_package_lists)
  mapfile -t wanted < <(cat "${lists[@]}" | sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^[[:space:]]*$/d' | sort -u)
  for pkg in "${wanted[@]}"; do
    [[ -z $pkg ]] && continue
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed' || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    step "Debian packages: all ${#wanted[@]} present"
    return
  fi
  step "Debian packages: installing ${missing[*]}"
  local log=$logs/apt.log sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null ||
      die "Debian packages" "-" "run as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update >"$log" 2>&1 ||
    die "apt-get update" "$log" "check the machine's apt sources and network, then rerun make setup"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1 ||
    die "apt-get install" "$log" "install the packages named in the log by hand, then rerun make setup"
}

# ---- 2. the virtual environment ----------------------------------------------------------------
make_venv() {
  command -v "$PYTHON" >/dev/null || die "Python" "-" "install Python 3 or set PYTHON=/path/to/python3"
  "$PYTHON" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$MIN_PYTHON'.split('.'))))" ||
    die "Python $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') is too old" "-" \
      "requirements.txt needs Python $MIN_PYTHON or newer: set PYTHON=/path/to/python3.11 (or newer)"
  if [[ ! -x $VENV/bin/python ]]; then
    step "Python: creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV" >"$logs/venv.log" 2>&1 ||
      die "python -m venv" "$logs/venv.log" "install the venv module (Debian: apt-get install python3-venv)"
  fi
  local stamp=$VENV/.requirements.sha256 want
  want=$(cat "$repo/requirements.txt" "$repo/constraints.txt" | sha256sum | cut -c1-16)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    step "Python: .venv packages up to date"
    return
  fi
  step "Python: installing requirements.txt into .venv"
  local log=$logs/pip.log
  {
    "$VENV/bin/python" -m pip install --upgrade pip &&
      "$VENV/bin/python" -m pip install -r "$repo/requirements.txt" -c "$repo/constraints.txt"
  } >"$log" 2>&1 || die "pip install" "$log" "check the pins in requirements.txt against the package index"
  echo "$want" >"$stamp"
}

# ---- 3. Caffe ----------------------------------------------------------------------------------
caffe_prefix() {
  if [[ -n ${CAFFE_ROOT:-} ]]; then
    echo "$CAFFE_ROOT"
    return
  fi
  echo "$CAFFE_CACHE/$(build_key "$VENV/bin/python")"
}

build_or_reuse_caffe() {
  prefix=$(caffe_prefix)
  if [[ -n ${CAFFE_ROOT:-} ]]; then
    [[ -x $prefix/bin/caffe && -d $(caffe_python_dir "$prefix") ]] ||
      die "CAFFE_ROOT" "-" "CAFFE_ROOT=$prefix must hold bin/caffe and a python dir with caffe/; unset it to build one"
    step "Caffe: using CAFFE_ROOT=$prefix"
  elif [[ -f $prefix/.complete ]]; then
    step "Caffe: cached build $prefix"
  else
    step "Caffe: building into $prefix (about 4 minutes on 2 cores)"
    PYTHON_FOR_CAFFE="$VENV/bin/python" bash "$here/build_caffe.sh" "$prefix"
  fi
}

# ---- 4. wire Caffe into .venv ------------------------------------------------------------------
link_caffe() {
  local prefix=$1 site pydir
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  pydir=$(caffe_python_dir "$prefix")
  # A .pth file puts pycaffe on the venv's path without anyone exporting PYTHONPATH.
  echo "$pydir" >"$site/caffe-toolkit.pth.tmp" && mv "$site/caffe-toolkit.pth.tmp" "$site/caffe-toolkit.pth"
  for tool in "${CAFFE_TOOLS[@]}"; do
    [[ -x $prefix/bin/$tool ]] && ln -sfn "$prefix/bin/$tool" "$VENV/bin/$tool"
  done
  echo "$prefix" >"$VENV/caffe-prefix"
  local log=$logs/import-check.log
  "$VENV/bin/python" -c 'import caffe; caffe.Net' >"$log" 2>&1 ||
    die "import caffe" "$log" "delete $prefix and rerun make setup to rebuild Caffe"
  step "Caffe: 'import caffe' works in .venv; binaries linked into .venv/bin"
}

# ---- W. Caffe from a wheel -----------------------------------------------------------------------
# A Python's wheel tag: cp311, cp313, ...
python_tag() { "$1" -c 'import sys; print("cp%d%d" % sys.version_info[:2])'; }

# The wheel for this venv's Python: CAFFE_WHEEL, else the newest matching bvlc_caffe wheel in dist/.
find_wheel() {
  [[ ${CAFFE_WHEEL:-} == 0 ]] && return 0
  if [[ -n ${CAFFE_WHEEL:-} ]]; then
    echo "$CAFFE_WHEEL"
    return 0
  fi
  [[ -n ${CAFFE_ROOT:-} ]] && return 0
  command -v "$PYTHON" >/dev/null || return 0
  local tag found
  tag=$(python_tag "$PYTHON" 2>/dev/null) || return 0
  found=$(compgen -G "$repo/dist/bvlc_caffe-*-$tag-$tag-*.whl" | sort -V | tail -1 || true)
  if [[ -n $found ]]; then
    echo "$found"
  elif [[ -f $VENV/caffe-wheel ]]; then
    echo installed  # the wheel an earlier `make setup CAFFE_WHEEL=...` installed stays the choice
  fi
  return 0
}

install_wheel() {
  local wheel=$1 site log=$logs/wheel-install.log stamp=$VENV/caffe-wheel want
  if [[ $wheel == installed ]]; then
    want=$(cat "$stamp")
    wheel=${want%% *}
  elif [[ $wheel != *://* ]]; then  # (a missing file was refused before anything was made)
    wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")
    want="$wheel $(stat -c '%s %Y' "$wheel")"
  else
    want=$wheel
  fi
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && "$VENV/bin/python" -c 'import caffe_tools' 2>/dev/null; then
    step "Caffe: wheel $(basename "$wheel") already installed"
  else
    step "Caffe: installing the wheel $(basename "$wheel") (no compiler, no root)"
    # a source build wired in earlier: its .pth and links go (they are setup's own, in .venv), so that
    # pip never writes through a link into the cached build
    rm -f "$site/caffe-toolkit.pth"
    for tool in "${CAFFE_TOOLS[@]}"; do
      [[ -L $VENV/bin/$tool ]] && rm -f "$VENV/bin/$tool"
    done
    "$VENV/bin/python" -m pip install --force-reinstall --no-deps "$wheel" >"$log" 2>&1 ||
      die "pip install $(basename "$wheel")" "$log" \
        "the wheel must match this Python ($(python_tag "$VENV/bin/python")) and x86_64 Linux with glibc at least the one in its name"
    echo "$want" >"$stamp"
  fi
  # (written only when it changes: a venv shared read-only, as the container's under `docker run --user`, stays so)
  [[ $(cat "$VENV/caffe-prefix" 2>/dev/null) == "$site" ]] || echo "$site" >"$VENV/caffe-prefix"
  log=$logs/import-check.log
  { "$VENV/bin/python" -c 'import caffe; caffe.Net' && "$VENV/bin/caffe" --version; } >"$log" 2>&1 ||
    die "import caffe from the wheel" "$log" "see the log; CAFFE_WHEEL=0 make setup builds Caffe from source instead"
  step "Caffe: 'import caffe' and 'caffe --version' work in .venv (from the wheel)"
}

# Switching from a wheel back to a source build: the wheel's caffe would shadow the .pth.
uninstall_wheel() {
  if "$VENV/bin/python" -m pip show -q bvlc-caffe >/dev/null 2>&1; then
    step "Caffe: removing the bvlc-caffe wheel from .venv (building from source instead)"
    "$VENV/bin/python" -m pip uninstall -y -q bvlc-caffe >"$logs/wheel-uninstall.log" 2>&1 ||
      die "pip uninstall bvlc-caffe" "$logs/wheel-uninstall.log" "see the log"
    rm -f "$VENV/caffe-wheel"
  fi
}

wheel=$(find_wheel)
if [[ -n $wheel ]]; then
  if [[ $wheel != installed && $wheel != *://* && ! -f $wheel ]]; then  # before anything is made
    die "CAFFE_WHEEL=$wheel" "-" "no such file: give the path of a bvlc_caffe-*.whl (make wheel builds them) or its URL"
  fi
  logs=$repo/results/setup-logs
  mkdir -p "$logs"
  make_venv
  install_wheel "$wheel"
  step "setup done with the wheel (make doctor for a full report)"
  exit 0
fi

mkdir -p "$logs"
ubuntu_advice
install_debian_packages
make_venv
uninstall_wheel
build_or_reuse_caffe # sets $prefix
link_caffe "$prefix"
step "setup done (make doctor for a full report)"
