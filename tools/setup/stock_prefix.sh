#!/usr/bin/env bash
# Print the prefix of stock Caffe (CAFFE_OPENMP=0: only the compatibility patches), building it first if
# it is missing. The benchmarks (bench/) time it against the OpenMP build that .venv uses.
#
#   tools/setup/stock_prefix.sh            (VENV: the venv whose Python the build is for, default .venv)
#
# Same cache and key as make setup (common.sh: build_key), so it is built once per recipe and Python.
# Only the prefix goes to stdout; build messages go to stderr. .venv is left as it is.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
VENV=${VENV:-$repo/.venv}
[[ $VENV == /* ]] || VENV=$repo/$VENV
export CAFFE_OPENMP=0 CAFFE_GPU=0
# shellcheck source=tools/setup/common.sh
source "$here/common.sh"

[[ -x $VENV/bin/python ]] || die "finding $VENV/bin/python" "-" "run make setup first"
prefix=$CAFFE_CACHE/$(build_key "$VENV/bin/python")
if [[ ! -f $prefix/.complete ]]; then
  step "stock Caffe (CAFFE_OPENMP=0): building into $prefix (about 4-5 minutes on 2 cores)" >&2
  PYTHON_FOR_CAFFE="$VENV/bin/python" bash "$here/build_caffe.sh" "$prefix" >&2
fi
[[ -x $prefix/bin/caffe ]] || die "stock Caffe in $prefix" "-" "delete $prefix and run this again"
echo "$prefix"
