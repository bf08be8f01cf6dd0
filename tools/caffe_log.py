"""The log Caffe writes itself, and the runner that follows it.

Caffe's output goes straight into the log file (glog writes each line in one unbuffered write), so the log
on disk is never behind what Caffe printed, and a runner that dies loses none of it. The runner reads the
file as it grows (follow), tells Caffe to stop when the runner dies (stop_with_parent), watches that the
log still has room (room_left: Caffe's own writes fail without a word), and adds `# toolkit:` lines (note).
"""

import contextlib
import ctypes
import errno
import os
import signal
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_BELOW = 16 << 20  # bytes free on the log's disk under which training is stopped


def ends_mid_line(log: Path) -> bool:
    try:
        with open(log, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:  # missing or empty
        return False


# Looked up here, in the parent: between fork and exec the child may not take the loader's lock (another
# thread may have held it at the fork), only call what is already resolved
_PRCTL = getattr(ctypes.CDLL(None), "prctl", None)


def stop_with_parent(parent: int):
    """In the child before exec: SIGINT when the runner dies, even by kill -9. With -sigint_effect stop, Caffe
    then snapshots and stops instead of training on unwatched (Linux only: elsewhere it trains on)."""
    if _PRCTL is None:
        return
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGINT)
    if os.getppid() != parent:  # the runner died before prctl took effect
        os.kill(os.getpid(), signal.SIGINT)


def follow(log: Path, offset: int, proc, watch, poll=0.05, every=1.0):
    """The lines Caffe writes to `log` from `offset` on, as they come, until it has exited; `watch(size, now)`
    is called after each read with the log's size, `now` true about every `every` seconds."""
    checked = time.monotonic()
    with open(log, "rb") as f:
        f.seek(offset)
        pending = b""
        while True:
            chunk = f.read(1 << 16)
            if chunk:
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace") + "\n"
            elif proc.poll() is not None:
                rest = f.read()  # written between the last read and the exit
                if not rest:
                    break
                pending += rest
            else:
                time.sleep(poll)
            now = time.monotonic() - checked >= every
            if now:
                checked = time.monotonic()
            watch(f.tell(), now)
        if pending:
            yield pending.decode(errors="replace")


# The log stops this far below the file-size limit (ulimit -f): room for Caffe's last lines as it snapshots
LIMIT_MARGIN = 64 << 10


def room_left(log: Path, size: int, look_at_disk: bool) -> OSError | None:
    """Why the log can take no more lines (the file-size limit near, a full disk), or None. Caffe's own
    writes fail without a word (glog drops them), so the runner looks before they do: at the limit on each
    read (no system call), at the disk when `look_at_disk`."""
    import resource
    import shutil

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and size >= limit - LIMIT_MARGIN:
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(log))
    if look_at_disk:
        with contextlib.suppress(OSError):
            if shutil.disk_usage(log.parent).free < STOP_BELOW:
                return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(log))
    return None


def note(log: Path, text: str):
    """A `# toolkit:` line in the log (the log parser skips them), best effort: the disk may be full."""
    with contextlib.suppress(OSError), open(log, "a") as f:
        f.write(("\n" if ends_mid_line(log) else "") + f"# toolkit: {text}\n")
