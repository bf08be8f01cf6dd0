#!/usr/bin/env bash
# `make setup && make test` in a clean Debian root, as a new user would run them.
#
#   bash tools/portability/debian-chroot.sh RELEASE [--head] [--keep]     (RELEASE: bookworm, trixie, ...)
#
# Needs root (debootstrap, chroot, mounts); installs debootstrap when missing. It
#   1. builds a minimal root of RELEASE once with debootstrap (minbase plus git, make, sudo,
#      ca-certificates: what the README assumes) and a user `student` with password-less sudo, into
#      $PORTABILITY_ROOTS/RELEASE (default ~/.cache/caffe-toolkit/roots/RELEASE). It is built in a
#      temporary folder and renamed only when complete; delete the folder to rebuild it.
#   2. for each run, lays a throw-away overlay over that root (the cached root is never changed), so
#      every run starts from the same clean system: nothing of the toolkit is installed in it, not
#      even Python; `make setup` has to install everything from tools/setup/debian-packages*.txt;
#   3. bind-mounts /proc, /sys, /dev, /dev/pts (and a fresh /dev/shm), and this clone read-only at
#      /src; as `student`, clones /src into ~/caffe-toolkit, lays the working tree's uncommitted
#      changes over it (--head: the committed HEAD only), and runs `make setup && make test` there.
#      Caffe is built inside the root (the student's ~/.cache), never taken from the host.
#   4. unmounts everything and deletes the overlay on any exit (--keep: leaves the overlay's files,
#      unmounted, for a look). All mounts live in a private mount namespace (unshare), so they never
#      show on the host and vanish with it even if this script is killed; nothing is deleted while
#      /proc/self/mountinfo still shows a mount under it.
#
# The mirror is the one this machine's apt uses for Debian (or DEBIAN_MIRROR); the security suite
# comes from the machine's security source when it has one. The root gets the host's network
# settings as a chroot must: /etc/resolv.conf, the locally added CA certificates
# (/usr/local/share/ca-certificates) and, when set, PIP_CERT / PIP_INDEX_URL / proxy variables.
# Everything else in the environment is cleared (env -i).
#
# Output and per-step times go to the terminal and to $PORTABILITY_ROOTS/logs/RELEASE-<time>.log;
# after a failure the root's ~/.cache/caffe-toolkit/logs are copied next to it.
#
# Measured (2 cores shared with other builds, 2026-11-29): debootstrap 45-80 s, once per release; then
# per run 11-26 minutes: Debian packages 1.5-6 min, .venv 20-50 s, Caffe 4-11 min, make test 3-8 min.
# The cached roots take about 0.3 GB each; a run's overlay (about 3.5 GB) is deleted afterwards.
set -euo pipefail

# All in one function, so bash has read the whole script before it runs any of it (editing the file
# during a run then cannot change the run).
main() {
  usage() { echo "usage: $0 RELEASE [--head] [--keep]   (e.g. bookworm, trixie)" >&2; exit 2; }
  release=
  head_only=0
  keep=0
  for arg in "$@"; do
    case $arg in
      --head) head_only=1 ;;
      --keep) keep=1 ;;
      -*) usage ;;
      *) [[ -z $release ]] || usage; release=$arg ;;
    esac
  done
  [[ $release =~ ^[a-z]+$ ]] || usage

  say() { printf '[portability %s] %s\n' "$release" "$*"; }
  fail() { printf '[portability %s] FAILED: %s\n' "$release" "$*" >&2; exit 1; }

  ((EUID == 0)) || fail "run as root (debootstrap, chroot and mounts need it): sudo bash $0 $*"
  if ! command -v debootstrap >/dev/null; then  # a new machine: install it, as make setup installs what it needs
    say "installing debootstrap"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap; } \
      >/dev/null 2>&1 || fail "installing debootstrap failed: apt-get install -y debootstrap, then run again"
  fi
  [[ -e /usr/share/debootstrap/scripts/$release ]] || fail "debootstrap does not know '$release'"
  command -v unshare >/dev/null || fail "unshare (util-linux) is missing"

  repo=$(cd "$(dirname "$0")/../.." && pwd)
  roots=${PORTABILITY_ROOTS:-${CAFFE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/caffe-toolkit}/roots}
  mkdir -p "$roots/logs"
  roots=$(cd "$roots" && pwd)
  [[ $roots =~ ^/[A-Za-z0-9._/+-]+$ ]] || fail "the roots folder '$roots' must be a plain path (no spaces)"
  [[ $roots/ != "$repo"/* ]] || fail "the roots folder must be outside the clone"

  # Everything below runs in a private mount namespace: its mounts are invisible to the host and go
  # away with it, whatever happens to this script.
  if [[ -z ${CAFFE_PORTABILITY_INNER:-} ]]; then
    export CAFFE_PORTABILITY_INNER=1
    exec unshare --mount --propagation private -- bash "$0" "$@"
  fi

  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  log=$roots/logs/$release-$stamp.log
  exec > >(tee -a "$log") 2>&1
  t0=$EPOCHSECONDS # (not $SECONDS: a subshell, such as the one `timed` runs in, starts its own count)
  elapsed() { local s=$((EPOCHSECONDS - t0)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

  # ---- the mirrors this machine's apt uses (never a host name written in the repo) ----------------
  host_codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  targets=$(apt-get indextargets --format '$(ORIGIN) $(CODENAME) $(REPO_URI)' 2>/dev/null | sort -u || true)
  mirror=${DEBIAN_MIRROR:-$(awk -v c="$host_codename" '$1 == "Debian" && $2 == c { print $3; exit }' <<<"$targets")}
  security=$(awk '$1 == "Debian" && $2 ~ /-security$/ { print $3; exit }' <<<"$targets")
  [[ -n $mirror ]] || fail "no Debian mirror in this machine's apt configuration: set DEBIAN_MIRROR=<mirror URL>"
  mirror=${mirror%/}
  security=${security%/}

  mounted=() # mount points, in mounting order
  run=

  # Every process whose root is inside the run's tree is one this script started (through chroot).
  kill_chroot_processes() {
    local dir=$1 pid root signal
    for signal in TERM KILL; do
      for pid in /proc/[0-9]*; do
        root=$(readlink "$pid/root" 2>/dev/null) || continue
        [[ $root == "$dir" || $root == "$dir"/* ]] && kill -s "$signal" "${pid#/proc/}" 2>/dev/null
      done
      [[ $signal == TERM ]] && sleep 1
    done
    return 0
  }

  mounts_under() { awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo; }

  # rm -rf only a folder that has no mount anywhere below it, and never across file systems.
  remove_tree() {
    local dir=$1
    [[ -n $dir && $dir == "$roots"/* ]] || { say "not removing '$dir': outside $roots"; return 1; }
    if [[ -n $(mounts_under "$dir") ]]; then
      say "NOT removing $dir: still mounted: $(mounts_under "$dir" | tr '\n' ' ')"
      return 1
    fi
    rm -rf --one-file-system "$dir"
  }

  cleanup() {
    local rc=$? i dir
    trap - EXIT INT TERM
    set +e
    [[ -n $run ]] && kill_chroot_processes "$run"
    [[ -n ${building:-} ]] && kill_chroot_processes "$building"
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
      umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || say "could not unmount ${mounted[i]}"
    done
    mounted=()
    # anything else mounted below our folders (debootstrap's own /proc, /sys), deepest first
    for dir in $run ${building:-}; do
      mounts_under "$dir" | sort -r | while read -r mp; do umount "$mp" 2>/dev/null || umount -l "$mp"; done
    done
    if [[ -n $run && -d $run ]]; then
      if ((keep)); then
        [[ -d $run/merged ]] && rmdir "$run/merged" 2>/dev/null
        say "kept the run's files (unmounted) in $run/upper"
      else
        remove_tree "$run"
      fi
    fi
    [[ -n ${building:-} && -d $building ]] && remove_tree "$building"
    say "done in $(elapsed), exit $rc (log: $log)"
    exit "$rc"
  }
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  do_mount() { # do_mount TARGET mount-args...
    local target=$1
    shift
    mount "$@" "$target"
    mounted+=("$target")
  }

  in_root() { # in_root DIR command...: as root inside DIR, with a clean environment
    local dir=$1
    shift
    chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
  }

  # ---- 1. the cached clean root ------------------------------------------------------------------
  root=$roots/$release
  if [[ ! -f $root/.complete ]]; then
    [[ -e $root ]] && fail "$root exists but is incomplete: remove it and rerun"
    building=$(mktemp -d "$roots/.$release.building.XXXXXX")
    chmod 755 "$building"
    say "debootstrap $release from $mirror into $building (once; a few minutes)"
    t=$SECONDS
    debootstrap --variant=minbase --include=ca-certificates,git,make,sudo \
      "$release" "$building" "$mirror" >"$roots/logs/debootstrap-$release.log" 2>&1 &
    wait $! || fail "debootstrap (log: $roots/logs/debootstrap-$release.log)"
    # debootstrap mounted /proc and /sys in the root for its second stage; it should have unmounted them
    [[ -z $(mounts_under "$building") ]] || fail "debootstrap left mounts under $building"
    {
      echo "Types: deb"
      echo "URIs: $mirror"
      echo "Suites: $release $release-updates"
      echo "Components: main"
      if [[ -n $security ]]; then
        echo
        echo "Types: deb"
        echo "URIs: $security"
        echo "Suites: $release-security"
        echo "Components: main"
      fi
    } >"$building/etc/apt/sources.list.d/debian.sources"
    rm -f "$building/etc/apt/sources.list"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
      cp /usr/local/share/ca-certificates/*.crt "$building/usr/local/share/ca-certificates/"
      in_root "$building" update-ca-certificates >>"$roots/logs/debootstrap-$release.log" 2>&1
    fi
    in_root "$building" useradd --create-home --shell /bin/bash student
    echo 'student ALL=(ALL) NOPASSWD: ALL' >"$building/etc/sudoers.d/student"
    chmod 440 "$building/etc/sudoers.d/student"
    in_root "$building" apt-get clean
    {
      echo "release=$release"
      echo "mirror=$mirror"
      echo "built=$(date -u +%FT%TZ)"
      echo "debootstrap_seconds=$((SECONDS - t))"
    } >"$building/.complete"
    mv "$building" "$root"
    building=
    say "root ready in $((SECONDS - t)) s: $root"
  else
    say "cached root $root ($(grep ^built= "$root/.complete"))"
  fi

  # ---- 2. a throw-away overlay and the mounts ----------------------------------------------------
  run=$(mktemp -d "$roots/.$release.run.XXXXXX")
  mkdir "$run/upper" "$run/work" "$run/merged"
  m=$run/merged
  do_mount "$m" -t overlay overlay -o "lowerdir=$root,upperdir=$run/upper,workdir=$run/work"
  do_mount "$m/proc" -t proc proc
  do_mount "$m/sys" --bind /sys
  mount -o remount,bind,ro "$m/sys"
  do_mount "$m/dev" --bind /dev
  do_mount "$m/dev/pts" --bind /dev/pts
  do_mount "$m/dev/shm" -t tmpfs -o mode=1777,nosuid,nodev tmpfs
  mkdir -p "$m/src"
  do_mount "$m/src" --bind "$repo"
  mount -o remount,bind,ro "$m/src"
  cp /etc/resolv.conf "$m/etc/resolv.conf"
  grep -q localhost "$m/etc/hosts" 2>/dev/null || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n' >>"$m/etc/hosts"

  # ---- 3. the README's commands, as the student ---------------------------------------------------
  passenv=()
  for v in PIP_CERT PIP_INDEX_URL PIP_DEFAULT_TIMEOUT http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [[ -n ${!v:-} ]] && passenv+=("$v=${!v}")
  done
  as_student() {
    chroot --userspec=student:student "$m" /usr/bin/env -i HOME=/home/student USER=student LOGNAME=student \
      SHELL=/bin/bash PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 "${passenv[@]}" /bin/bash -c "$1"
  }
  # prefix each output line with the time since the start, so the log shows what took how long
  timed() { while IFS= read -r line; do printf '%7s  %s\n' "$(elapsed)" "$line"; done; }
  # A long step runs in the background while this shell waits: bash runs a trap (INT, TERM) only
  # between commands, and `wait` is one it can leave at once, so cleanup starts without delay.
  student_step() { as_student "$1" 2>&1 | timed; }

  say "clone /src into ~student/caffe-toolkit ($([[ $head_only == 1 ]] && echo "committed HEAD" || echo "working tree, uncommitted changes included"))"
  as_student '
    set -euo pipefail
    git config --global --add safe.directory /src && git config --global --add safe.directory /src/.git
    git clone -q /src ~/caffe-toolkit
    if [[ '"$head_only"' == 0 ]]; then
      cd /src
      git ls-files -z --deleted | (cd ~/caffe-toolkit && xargs -0r rm -f --)
      git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d "" f; do if [[ -e $f || -L $f ]]; then printf "%s\0" "$f"; fi; done |
      tar --null -T - -cf - | tar -xf - -C ~/caffe-toolkit
    fi
    echo "HEAD $(git -C ~/caffe-toolkit log -1 --format="%h %s" | cut -c1-80)"
    git -C ~/caffe-toolkit status --short | head -20
  '
  say "system: $(in_root "$m" bash -c '. /etc/os-release; echo "$PRETTY_NAME"')"

  status=0
  t=$SECONDS
  say "make setup"
  student_step 'cd ~/caffe-toolkit && make setup' &
  wait $! || status=$?
  setup_s=$((SECONDS - t))
  test_s=0
  if ((status == 0)); then
    t=$SECONDS
    say "make test"
    student_step 'cd ~/caffe-toolkit && make test' &
    wait $! || status=$?
    test_s=$((SECONDS - t))
  fi
  versions=$(as_student '~/caffe-toolkit/.venv/bin/python -c "import sys, numpy; print(\"Python %d.%d.%d\" % sys.version_info[:3], \"numpy\", numpy.__version__)"; gcc --version | head -1' 2>/dev/null | tr '\n' ';' || true)
  say "versions: $versions"
  say "times: make setup ${setup_s}s, make test ${test_s}s"
  if ((status != 0)); then
    dest=$roots/logs/$release-$stamp-setup-logs
    cp -r "$m/home/student/.cache/caffe-toolkit/logs" "$dest" 2>/dev/null && say "the root's setup logs: $dest"
    say "RESULT: FAILED (exit $status)"
    exit "$status"
  fi
  say "RESULT: PASSED ($release: make setup ${setup_s}s, make test ${test_s}s)"
}
main "$@"
exit
