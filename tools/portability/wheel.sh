#!/usr/bin/env bash
# The wheel's two clean-root jobs, both through debian-chroot.sh (root: debootstrap, chroot, mounts).
#
#   bash tools/portability/wheel.sh build RELEASE   (make wheel)
#       builds the bvlc-caffe wheel for RELEASE's system Python in a root holding only
#       tools/wheel/build-packages.txt, and writes it (and its .json report) into dist/. The root's
#       build cache (OpenCV, Caffe) is kept in $WHEEL_CACHE/RELEASE between runs.
#   bash tools/portability/wheel.sh check RELEASE   (make portability-wheel)
#       in a root holding only python3, python3-venv, git, make and ca-certificates
#       (tools/portability/user-packages.txt: no compiler, no -dev package, no sudo), an ordinary user
#       runs `make setup CAFFE_WHEEL=<the wheel for that Python>` and `make test`. The root cannot reach
#       Fashion-MNIST's published URL (only the package registries answer here), so the user's own copy
#       is passed as FASHION_MNIST_DIR: the Debian package's files of this machine, or $FASHION_MNIST_DIR.
#
# Output and times: as debian-chroot.sh prints them, and its log under the roots folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
job=${1:-}
release=${2:-}
[[ $job =~ ^(build|check)$ && $release =~ ^[a-z]+$ ]] || { echo "usage: $0 build|check RELEASE" >&2; exit 2; }
cache=${CAFFE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/caffe-toolkit}
dist=$repo/dist
mkdir -p "$dist"

# the system Python of each release, and so the tag of its wheel
case $release in
  bookworm) tag=cp311 ;;
  trixie) tag=cp313 ;;
  *) tag= ;;
esac

if [[ $job == build ]]; then
  out=$(mktemp -d "$cache/wheel-out.XXXXXX")  # the student's; its wheel then moves into dist/
  trap 'rm -rf "$out"' EXIT
  bash "$here/debian-chroot.sh" "$release" --packages "$repo/tools/wheel/build-packages.txt" \
    --cache "${WHEEL_CACHE:-$cache/wheel-build}/$release" --bind "$out:/out:rw" \
    --step "bash tools/wheel/build_wheel.sh /out" --label wheel-build
  for f in "$out"/*.whl "$out"/*.whl.json; do
    cp "$f" "$dist/$(basename "$f").tmp" && mv "$dist/$(basename "$f").tmp" "$dist/$(basename "$f")"
    echo "[wheel] $dist/$(basename "$f")"
  done
  exit 0
fi

[[ -n $tag ]] || { echo "wheel.sh: no known system Python for $release (bookworm: 3.11, trixie: 3.13)" >&2; exit 2; }
wheel=$(compgen -G "$dist/bvlc_caffe-*-$tag-$tag-*.whl" | sort -V | tail -1 || true)
[[ -n $wheel ]] || { echo "wheel.sh: no $tag wheel in dist/: run 'make wheel WHEEL_RELEASES=$release' first" >&2; exit 1; }
fmnist=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
[[ -f $fmnist/train-images-idx3-ubyte.gz ]] ||
  { echo "wheel.sh: no Fashion-MNIST files in $fmnist: apt-get install dataset-fashion-mnist, or set FASHION_MNIST_DIR" >&2; exit 1; }
exec bash "$here/debian-chroot.sh" "$release" --packages "$here/user-packages.txt" \
  --bind "$dist:/wheels" --bind "$fmnist:/home/fashion-mnist" --env FASHION_MNIST_DIR=/home/fashion-mnist \
  --step "make setup CAFFE_WHEEL=/wheels/$(basename "$wheel")" --step "make test" --label wheel-check
