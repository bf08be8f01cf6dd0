#!/usr/bin/env bash
# `make container`: build the Dockerfile's image with podman, `make test` inside the build.
#
#   bash tools/portability/container.sh [--no-test]
#
# Needs root and a cp313 wheel in dist/ (`make wheel`). Docker Hub is not reachable on the project's
# machines, so the base image `debian:trixie-slim` is made here: a debootstrap minbase root of trixie
# (cached as a tarball in the roots folder) imported with `podman import` under that name, and the
# build never pulls (--pull=never). The root gets what a chroot gets in debian-chroot.sh: this
# machine's Debian mirror, its locally added CA certificates and /etc/pip.conf, so apt and pip inside
# the build reach the registries as they do here. `podman build --isolation chroot` is used because
# `podman run` (and so the default isolation) fails in this sandbox (rlimits, cgroups).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
run_tests=1
[[ ${1:-} == --no-test ]] && run_tests=0
say() { printf '[container] %s\n' "$*"; }
fail() { printf '[container] FAILED: %s\n' "$*" >&2; exit 1; }

((EUID == 0)) || fail "run as root (debootstrap and podman need it): sudo make container"
compgen -G "$repo/dist/bvlc_caffe-*-cp313-cp313-*.whl" >/dev/null ||
  fail "no cp313 wheel in dist/: run 'make wheel WHEEL_RELEASES=trixie' first"
for tool in podman debootstrap; do
  if ! command -v $tool >/dev/null; then
    say "installing $tool"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$tool"; } >/dev/null 2>&1 ||
      fail "installing $tool: apt-get install -y $tool, then run again"
  fi
done

roots=${PORTABILITY_ROOTS:-${CAFFE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/caffe-toolkit}/roots}
mkdir -p "$roots/logs"
base=$roots/trixie-slim.tar
t0=$EPOCHSECONDS
if ! podman image exists docker.io/library/debian:trixie-slim; then
  if [[ ! -f $base ]]; then
    mirror=${DEBIAN_MIRROR:-$(apt-get indextargets --format '$(ORIGIN) $(REPO_URI)' 2>/dev/null |
      awk '$1 == "Debian" { print $2; exit }')}
    [[ -n $mirror ]] || fail "no Debian mirror in this machine's apt configuration: set DEBIAN_MIRROR"
    tmp=$(mktemp -d "$roots/.trixie-slim.XXXXXX")
    trap 'rm -rf --one-file-system "$tmp"' EXIT
    say "debootstrap trixie (minbase) from $mirror for the base image"
    debootstrap --variant=minbase --include=ca-certificates trixie "$tmp" "$mirror" >"$roots/logs/container-base.log" 2>&1 ||
      fail "debootstrap (log: $roots/logs/container-base.log)"
    printf 'Types: deb\nURIs: %s\nSuites: trixie trixie-updates\nComponents: main\n' "${mirror%/}" \
      >"$tmp/etc/apt/sources.list.d/debian.sources"
    rm -f "$tmp/etc/apt/sources.list"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
      cp /usr/local/share/ca-certificates/*.crt "$tmp/usr/local/share/ca-certificates/"
      chroot "$tmp" update-ca-certificates >>"$roots/logs/container-base.log" 2>&1
    fi
    [[ -f /etc/pip.conf ]] && cp /etc/pip.conf "$tmp/etc/pip.conf"
    chroot "$tmp" apt-get clean
    tar -C "$tmp" -cf "$base.tmp" . && mv "$base.tmp" "$base"
    rm -rf --one-file-system "$tmp"
    trap - EXIT
  fi
  say "podman import $base as debian:trixie-slim"
  podman import "$base" docker.io/library/debian:trixie-slim >/dev/null
fi

log=$roots/logs/container-$(date -u +%Y%m%dT%H%M%SZ).log
say "podman build (make setup from the wheel$([[ $run_tests == 1 ]] && echo ", then make test") inside; log: $log)"
load_start=$(cut -d' ' -f1 /proc/loadavg)
t1=$EPOCHSECONDS
podman build --isolation chroot --pull=never --build-arg RUN_TESTS=$run_tests -t caffe-toolkit:cpu \
  -f "$repo/Dockerfile" "$repo" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
seconds=$((EPOCHSECONDS - t1))
size=0
((status == 0)) && size=$(podman image inspect caffe-toolkit:cpu --format '{{.Size}}')
# the run's result, for `make readme` (tools/install_report.py), as debian-chroot.sh writes its own
mkdir -p "$repo/results/portability"
python3 - "$repo/results/portability/trixie-container.json" "$status" "$seconds" "$load_start $(cut -d' ' -f1 /proc/loadavg)" \
  "$(grep -aE '[0-9]+ (passed|failed)' "$log" | tail -1 | sed -E 's/=//g; s/^ +| +$//g')" \
  "$(podman --version); image $((size / 1000000)) MB" "$run_tests" <<'PY' || true
import json, os, sys, time
path, status, seconds, load, pytest_line, versions, run_tests = sys.argv[1:]
steps = "podman build: make setup CAFFE_WHEEL=<cp313 wheel>" + (", make test" if run_tests == "1" else "")
result = {"release": "trixie", "label": "container", "result": "passed" if status == "0" else f"failed (exit {status})",
          "steps": [{"command": steps, "seconds": int(seconds)}], "pytest": pytest_line, "versions": versions,
          "root_packages": [], "load_average_start_end": load, "cores": os.cpu_count(),
          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=1)
os.replace(path + ".tmp", path)
PY
((status == 0)) || fail "podman build exited $status (log: $log)"
say "RESULT: PASSED: image caffe-toolkit:cpu, $((size / 1000000)) MB, built in $((EPOCHSECONDS - t0)) s (log: $log)"
