#!/usr/bin/env bash
# `make setup && make test` in a clean Debian root, as a new user would run them.
#
#   bash tools/portability/debian-chroot.sh RELEASE [--head] [--keep] [--packages FILE] [--cache DIR]
#        [--bind HOST:INSIDE[:rw]]... [--env NAME=VALUE]... [--step 'COMMAND']...     (RELEASE: bookworm, trixie)
#
# Without options it runs `make setup` then `make test` as a user with sudo. The options make the other
# clean-root jobs from the same parts (see the Makefile's wheel and portability-wheel targets):
#   --packages FILE  the root holds these Debian packages (one per line, '#' comments) instead of the
#                    default "ca-certificates git make sudo"; cached per list. Without sudo in the list,
#                    the student has no root at all (the no-root, no-compiler check of the wheel).
#   --cache DIR      DIR (on the host) is the student's ~/.cache/caffe-toolkit, kept between runs
#                    (the wheel build's OpenCV and Caffe).
#   --bind H:I[:rw]  the host's H at I inside, read-only unless :rw (a wheel, data; with :rw a fresh output
#                    folder, which is handed to the student's user).
#   --env N=V        set for the student's commands.
#   --step CMD       a command the student runs in ~/caffe-toolkit, timed; repeatable; replaces the
#                    default steps.
#   --label NAME     the run's name in its result file, results/portability/RELEASE-NAME.json (steps and
#                    their seconds, the pytest summary line, versions, load average, date), which
#                    `make readme` publishes (tools/install_report.py).
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
  local all_args=("$@")
  usage() { echo "usage: $0 RELEASE [--head] [--keep] [--packages FILE] [--cache DIR] [--bind H:I[:rw]] [--env N=V] [--step CMD]" >&2; exit 2; }
  release=
  head_only=0
  keep=0
  packages_file=
  cache_dir=
  binds=()
  student_env=()
  steps=()
  label=setup-test
  while (($#)); do
    case $1 in
      --head) head_only=1 ;;
      --keep) keep=1 ;;
      --packages) packages_file=${2:?}; shift ;;
      --cache) cache_dir=${2:?}; shift ;;
      --bind) binds+=("${2:?}"); shift ;;
      --env) student_env+=("${2:?}"); shift ;;
      --step) steps+=("${2:?}"); shift ;;
      --label) label=${2:?}; shift ;;
      -*) usage ;;
      *) [[ -z $release ]] || usage; release=$1 ;;
    esac
    shift
  done
  ((${#steps[@]})) || steps=("make setup" "make test")
  [[ $release =~ ^[a-z]+$ ]] || usage

  say() { printf '[portability %s] %s\n' "$release" "$*"; }
  fail() { printf '[portability %s] FAILED: %s\n' "$release" "$*" >&2; exit 1; }

  ((EUID == 0)) || fail "run as root (debootstrap, chroot and mounts need it): sudo bash $0 ${all_args[*]}"
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
    exec unshare --mount --propagation private -- bash "$0" "${all_args[@]}"
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
  root_packages=ca-certificates,git,make,sudo
  root=$roots/$release
  if [[ -n $packages_file ]]; then
    [[ -f $packages_file ]] || fail "no package list $packages_file"
    root_packages=$(sed -e 's/#.*//' "$packages_file" | tr -s ' \t\n' '\n' | sed '/^$/d' | sort -u | paste -sd, -)
    root=$roots/$release-$(printf '%s' "$root_packages" | sha256sum | cut -c1-10)
  fi
  with_sudo=0
  [[ ,$root_packages, == *,sudo,* ]] && with_sudo=1
  if [[ ! -f $root/.complete ]]; then
    [[ -e $root ]] && fail "$root exists but is incomplete: remove it and rerun"
    building=$(mktemp -d "$roots/.$release.building.XXXXXX")
    chmod 755 "$building"
    say "debootstrap $release from $mirror into $building (once; a few minutes)"
    t=$SECONDS
    debootstrap --variant=minbase --include="$root_packages" \
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
    if ((with_sudo)); then
      echo 'student ALL=(ALL) NOPASSWD: ALL' >"$building/etc/sudoers.d/student"
      chmod 440 "$building/etc/sudoers.d/student"
    fi
    in_root "$building" apt-get clean
    {
      echo "release=$release"
      echo "packages=$root_packages"
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
  if [[ -n $cache_dir ]]; then  # the student's build cache, kept on the host between runs
    mkdir -p "$cache_dir" "$m/home/student/.cache/caffe-toolkit"
    chown "$(stat -c %u:%g "$m/home/student")" "$cache_dir"
    do_mount "$m/home/student/.cache/caffe-toolkit" --bind "$cache_dir"
  fi
  for spec in "${binds[@]}"; do
    IFS=: read -r host_path inside mode <<<"$spec"
    [[ -e $host_path && $inside == /* ]] || fail "--bind $spec: needs an existing HOST path and an absolute INSIDE path"
    if [[ -d $host_path ]]; then mkdir -p "$m$inside"; else mkdir -p "$(dirname "$m$inside")" && touch "$m$inside"; fi
    do_mount "$m$inside" --bind "$host_path"
    if [[ $mode == rw ]]; then  # the student writes there: hand the folder over (use a fresh one)
      chown "$(stat -c %u:%g "$m/home/student")" "$host_path"
    else
      mount -o remount,bind,ro "$m$inside"
    fi
  done
  cp /etc/resolv.conf "$m/etc/resolv.conf"
  grep -q localhost "$m/etc/hosts" 2>/dev/null || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n' >>"$m/etc/hosts"

  # ---- 3. the README's commands, as the student ---------------------------------------------------
  passenv=()
  for v in PIP_CERT PIP_INDEX_URL PIP_DEFAULT_TIMEOUT http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [[ -n ${!v:-} ]] && passenv+=("$v=${!v}")
  done
  as_student() {
    chroot --userspec=student:student "$m" /usr/bin/env -i HOME=/home/student USER=student LOGNAME=student \
      SHELL=/bin/bash PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 "${passenv[@]}" "${student_env[@]}" /bin/bash -c "$1"
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
  times=()
  step_seconds=()
  load_start=$(cut -d' ' -f1 /proc/loadavg)
  for cmd in "${steps[@]}"; do
    t=$SECONDS
    say "$cmd"
    student_step "cd ~/caffe-toolkit && $cmd" &
    wait $! || status=$?
    times+=("$cmd $((SECONDS - t))s")
    step_seconds+=("$cmd" "$((SECONDS - t))")
    ((status == 0)) || break
  done
  versions=$(as_student 'python3 -c "import sys; print(\"Python %d.%d.%d\" % sys.version_info[:3])"; gcc --version 2>/dev/null | head -1 || echo "no compiler"' 2>/dev/null | tr '\n' ';' || true)
  say "versions: $versions"
  times_line=$(printf '%s, ' "${times[@]}")
  times_line=${times_line%, }
  say "times: $times_line"
  pytest_line=$(grep -aE '[0-9]+ (passed|failed)' "$log" | tail -1 | sed -E 's/^ *[0-9]+m[0-9]+s +//; s/=//g; s/^ +| +$//g' || true)
  mkdir -p "$repo/results/portability"
  python3 - "$repo/results/portability/$release-$label.json" "$release" "$label" "$status" "$versions" \
    "$pytest_line" "$load_start $(cut -d' ' -f1 /proc/loadavg)" "$(nproc)" "$root_packages" "${step_seconds[@]}" <<'PY' || true
import json, os, sys, time
path, release, label, status, versions, pytest_line, load, cores, packages, *steps = sys.argv[1:]
result = {"release": release, "label": label, "result": "passed" if status == "0" else f"failed (exit {status})",
          "steps": [{"command": c, "seconds": int(s)} for c, s in zip(steps[::2], steps[1::2])],
          "pytest": pytest_line, "versions": versions.strip(";"), "root_packages": packages.split(","),
          "load_average_start_end": load, "cores": int(cores), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=1)
os.replace(path + ".tmp", path)
PY
  if ((status != 0)); then
    dest=$roots/logs/$release-$stamp-setup-logs
    cp -r "$m/home/student/.cache/caffe-toolkit/logs" "$dest" 2>/dev/null && say "the root's setup logs: $dest"
    say "RESULT: FAILED (exit $status)"
    exit "$status"
  fi
  say "RESULT: PASSED ($release: $times_line)"
}
main "$@"
exit
