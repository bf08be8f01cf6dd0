#!/usr/bin/env bash
# `make setup`: everything the toolkit needs, idempotent. A second run only checks (seconds).
#
#   0. On Ubuntu, without CAFFE_ROOT or DEBIAN_MIRROR: prints what to do there and stops.
#   1. Debian packages (tools/setup/debian-packages.txt, plus debian-packages-<codename>.txt for the
#      release /etc/os-release names): installs the missing ones.
#   2. .venv with the pinned Python packages (requirements.txt + constraints.txt).
#   3. BVLC Caffe, built from Debian's source package by build_caffe.sh into a prefix outside the
#      clone, keyed by source version + patches + Python/numpy + CPU/GPU (skipped when CAFFE_ROOT
#      points at a Caffe you already have).
#   4. Wires Caffe into .venv: a .pth file for `import caffe`, and the binaries in .venv/bin.
#
# Variables: PYTHON (interpreter for .venv, default python3), CAFFE_CACHE (build cache, default
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
[[ $VENV == /* ]] || VENV=$PWD/$VENV
mkdir -p "$CAFFE_CACHE/logs"

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
  local log=$CAFFE_CACHE/logs/apt.log sudo=()
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
    "$PYTHON" -m venv "$VENV" >"$CAFFE_CACHE/logs/venv.log" 2>&1 ||
      die "python -m venv" "$CAFFE_CACHE/logs/venv.log" "install the venv module (Debian: apt-get install python3-venv)"
  fi
  local stamp=$VENV/.requirements.sha256 want
  want=$(cat "$repo/requirements.txt" "$repo/constraints.txt" | sha256sum | cut -c1-16)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    step "Python: .venv packages up to date"
    return
  fi
  step "Python: installing requirements.txt into .venv"
  local log=$CAFFE_CACHE/logs/pip.log
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
  for tool in caffe compute_image_mean convert_imageset upgrade_net_proto_text upgrade_solver_proto_text; do
    [[ -x $prefix/bin/$tool ]] && ln -sfn "$prefix/bin/$tool" "$VENV/bin/$tool"
  done
  echo "$prefix" >"$VENV/caffe-prefix"
  local log=$CAFFE_CACHE/logs/import-check.log
  "$VENV/bin/python" -c 'import caffe; caffe.Net' >"$log" 2>&1 ||
    die "import caffe" "$log" "delete $prefix and rerun make setup to rebuild Caffe"
  step "Caffe: 'import caffe' works in .venv; binaries linked into .venv/bin"
}

ubuntu_advice
install_debian_packages
make_venv
build_or_reuse_caffe # sets $prefix
link_caffe "$prefix"
step "setup done (make doctor for a full report)"
