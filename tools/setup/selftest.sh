#!/usr/bin/env bash
# `make caffe-selftest`: Caffe's own GoogleTest suite on the build `make setup` installed, with 1 and 2
# OpenMP threads.
#
# The test binary is built once, from the same source, patches and configure flags as the installed
# build, into <prefix>.selftest/ beside it in the cache (about 8 minutes on 2 cores: the library again,
# then the tests), and reused. It runs every CPU test of the suite (GPU tests are skipped on a CPU-only
# build, where one of them aborts), from the source root, as the tests open src/caffe/test/test_data/
# and examples/images/ by relative path. That covers every layer our patches touch (neuron layers, Dropout, Pooling, LRN,
# Convolution and Deconvolution, im2col, the data transformer), the math functions, Net, the solvers and the gradient
# checks. Then pycaffe's own unittest suite, on the installed pycaffe.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tools/setup/common.sh
source "$here/common.sh"

VENV=${VENV:-$repo/.venv}
[[ $VENV == /* ]] || VENV=$PWD/$VENV
[[ -f $VENV/caffe-prefix ]] || die "finding the Caffe build" "-" "run make setup first"
prefix=$(cat "$VENV/caffe-prefix")
[[ -f $prefix/.complete ]] ||
  die "finding the Caffe build" "-" "$prefix was not built by make setup (CAFFE_ROOT?): the self-test needs its recipe"
tests=$prefix.selftest
logs=$CAFFE_CACHE/logs
mkdir -p "$logs"

if [[ ! -f $tests/.complete ]]; then
  staging=$(mktemp -d "$CAFFE_CACHE/selftest.XXXXXX")
  trap 'rm -rf "$staging"' EXIT
  step "building Caffe's test suite into $tests (once; about 8 minutes on 2 cores)"
  # The recipe the installed build recorded: its patch set and its configure flags.
  patch_set=$(sed -n 's/^patches=//p' "$prefix/.complete")
  read -ra flags <<<"$(sed -n 's/^cmake_flags=//p' "$prefix/.complete")"
  log=$logs/selftest-build.log
  unpack_patched_source "$staging/src" "$patch_set" >"$log" 2>&1 ||
    die "unpacking/patching the Caffe source" "$log" "rerun make setup, then make caffe-selftest"
  mkdir -p "$staging/build"
  (cd "$staging/build" && cmake "${flags[@]}" "$staging/src") >>"$log" 2>&1 ||
    die "cmake for the test suite" "$log" "see the log"
  make -C "$staging/build" -j"$(nproc)" test.testbin >>"$log" 2>&1 ||
    die "compiling Caffe's test suite" "$log" "the first 'error:' in the log names the file"
  # Kept: the source tree, since tests open src/caffe/test/test_data/ and examples/images/ by
  # relative path, with the test binary and its own libcaffe beside them.
  mv "$staging/build/test/test.testbin" "$staging/src/test.testbin"
  mv "$staging/build/lib" "$staging/src/test-lib"  # found through LD_LIBRARY_PATH below
  date -u +%FT%TZ >"$staging/src/.complete"
  rm -rf "$tests"
  mv "$staging/src" "$tests"
fi

failed=0
report=("# Caffe's own test suite on the toolkit's build (\`make caffe-selftest\`)" ""
  "Written by tools/setup/selftest.sh on $(date -u +%F) ($(nproc) cores): every CPU test of Caffe's GoogleTest"
  "suite, built from the same source, patches and flags as the installed build:"
  "\`$(basename "$prefix")\` (patches: $(sed -n 's/^patches=//p' "$prefix/.complete" | xargs -n1 basename | tr '\n' ' '))." ""
  "| OMP_NUM_THREADS | result | tests passed | seconds |" "|---|---|---|---|")
# suite LOG COMMAND...: runs the command in a subshell, its output into LOG; sets result, seconds and, on a
# failure, failed=1.
suite() {
  local log=$1 start
  shift
  start=$(date +%s)
  if ("$@") >"$log" 2>&1; then
    result=passed
  else
    result=FAILED
    failed=1
  fi
  seconds=$(($(date +%s) - start))
}
googletest() {
  cd "$tests" && LD_LIBRARY_PATH=$tests/test-lib GOMP_SPINCOUNT=10000 OMP_NUM_THREADS=$1 GLOG_minloglevel=2 \
    ./test.testbin --gtest_filter='-*GPU*'
}
# pycaffe's own unittest suite (python/caffe/test: nets, Python layers, solvers, NetSpec, drawing) on the
# installed pycaffe, which patch 0024 changed (its passes release the GIL); run from outside the source tree
# so that `import caffe` finds the installed build, not the source's python/caffe.
pycaffe_unittest() {
  cd "$logs" && GLOG_minloglevel=2 "$VENV/bin/python" -m unittest discover -s "$tests/python/caffe/test" \
    -t "$tests/python/caffe/test"
}

for threads in 1 2; do
  log=$logs/selftest-$threads-threads.log
  suite "$log" googletest "$threads"
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) tests\?\..*/\1/p' "$log" | tail -1)
  count=$(sed -n 's/^\[==========\] \([0-9]*\) tests\? from \([0-9]*\) test cases\? ran.*/\1 tests from \2 test cases/p' "$log" | tail -1)
  step "OMP_NUM_THREADS=$threads: $result: ${passed:-0} passed of ${count:-?} in $seconds s (log: $log)"
  report+=("| $threads | $result | ${passed:-0} of ${count:-?} | $seconds |")
done
log=$logs/selftest-pycaffe.log
suite "$log" pycaffe_unittest
ran=$(sed -n 's/^Ran \([0-9]*\) tests\? in.*/\1/p' "$log" | tail -1)
errors=$(sed -n 's/^FAILED (\(.*\))$/\1/p' "$log" | tail -1)
step "pycaffe's unittest suite: $result: ${ran:-0} tests${errors:+ ($errors)} in $seconds s (log: $log)"
report+=("" "pycaffe's own unittest suite (\`python/caffe/test\`, on the installed pycaffe): $result, ${ran:-0} tests${errors:+ ($errors)}, $seconds s.")
# The README points at this file rather than copying its numbers.
out=$repo/results/caffe-selftest.md  # make readme publishes it as docs/caffe-selftest.md
mkdir -p "$(dirname "$out")"
printf '%s\n' "${report[@]}" >"$out.tmp" && mv "$out.tmp" "$out"
step "summary: $out"
if ((failed)); then
  die "Caffe's test suite" "$logs/selftest-*.log" "the '[  FAILED  ]' lines (GoogleTest) or 'FAIL:' / 'ERROR:' lines (pycaffe) name the tests"
fi
