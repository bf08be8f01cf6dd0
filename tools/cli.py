"""How the toolkit's command lines end, and the argument types they share.

Exit status, the same for every command:
    0    done
    1    a failure the toolkit expected: one line, `error: <what and where>. Fix: ...`, never a traceback
    2    a usage error (argparse's own convention: a wrong option or value)
    130  interrupted (Ctrl-C, or a training stopped by a signal): one line saying how to go on

    with exit_on(ValueError):          # failures this command expects besides the common ones
        run(...)

The common ones, caught by every command: any tools.errors.ToolkitError (Caffe failures, a missing set-up,
a folder another run holds, a damaged state file, ...), any OSError (the file, what the system said, and the
fix: os_error_line), and KeyboardInterrupt.
"""

import argparse
import contextlib
import errno
import shutil
import sys
from pathlib import Path

from tools.errors import ToolkitError

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def size_text(n: int) -> str:
    """Bytes as people read them: 0 bytes, 812 bytes, 4.1 kB, 19.5 MB, 1.2 GB."""
    if n < 1000:
        return f"{n} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _existing_folder(path) -> Path:
    """The nearest folder at or above `path` that exists (`path` itself may not: a file that failed to appear)."""
    p = Path(path).absolute()
    for q in (p, *p.parents):
        if q.is_dir():
            return q
    return Path("/")


def free_space(path) -> tuple[int, int] | None:
    """(free, total) bytes of the file system that holds `path` (or would), or None if that cannot be told."""
    try:
        usage = shutil.disk_usage(_existing_folder(path))
    except OSError:
        return None
    return usage.free, usage.total


FULL = 1 << 20  # a disk with less free space than this cannot take a snapshot, a log line's worth of writes, ...


def disk_is_full(path) -> bool:
    """Whether the disk that holds `path` has (nearly) no space left: what a write that failed without saying
    why (LMDB's `mdb_txn_commit: Input/output error`, Caffe's `Check failed: proto.SerializeToOstream`) meant."""
    space = free_space(path)
    return space is not None and space[0] < FULL


def _disk_full_fix(path) -> str:
    folder = _existing_folder(Path(path).parent)
    space = free_space(path)
    free = f"{size_text(space[0])} free of {size_text(space[1])}" if space else "its free space unknown"
    return (f"the disk is full ({free} on the disk that holds {folder}). Fix: free space there (df -h {folder}) and "
            "run the same command again (a training resumes from its last good snapshot)")


def disk_full_line(path) -> str:
    """One line for a write to `path` that failed because its disk is full, with the free space left there; for
    failures reported by another program (Caffe, LMDB) that do not say ENOSPC: see caffe_disk_full."""
    return f"{path}: {_disk_full_fix(path)}"


# What Caffe and LMDB print when a write fails for want of space (they do not say ENOSPC)
WRITE_FAILED = ("SerializeToOstream", "mdb_txn_commit", "No space left on device", "Input/output error",
                "Check failed: status.ok() Failed to write")


def caffe_disk_full(fatal_line: str | None, path) -> str | None:
    """disk_full_line(path) when Caffe's fatal line is a failed write (io.cpp's `Check failed:
    proto.SerializeToOstream(&output)`, LMDB's `mdb_txn_commit: Input/output error`, ...) and the disk that holds
    `path` (the snapshot folder, or the log) is full; else None: the failure is something else."""
    if fatal_line and any(s in fatal_line for s in WRITE_FAILED) and disk_is_full(path):
        return disk_full_line(path)
    return None


def os_error_line(e: OSError) -> str:
    """One line for an OSError: the file, what the system said, and what to do (for a full disk, the free space
    left on it)."""
    where = e.filename or "a file"
    said = f"{where}: {e.strerror or e}" + (f" (errno {e.errno})" if e.errno else "")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        if e.errno == errno.EDQUOT:
            return (f"{said}: your disk quota is used up. Fix: free space under your quota (quota -s) and run the "
                    "same command again: it resumes from the last good snapshot")
        return f"{said}: {_disk_full_fix(where)}"
    if e.errno == errno.EFBIG:
        fix = ("raise the file-size limit (ulimit -f) and run the same command again: it resumes from the last good "
               "snapshot")
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable (or work in a clone you own) and run the same command again"
    elif e.errno == errno.EISDIR:
        fix = "give a file name, not a folder"
    else:
        fix = "check the file and its disk, then run the same command again"
    return f"{said}. Fix: {fix}"


@contextlib.contextmanager
def exit_on(*expected: type[BaseException]):
    """Within the block, the common failures and `expected` end the program with one line and the status
    above; an interrupted training says how to resume."""
    try:
        yield
    except (ToolkitError, *expected) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt as e:
        print(str(e) or "interrupted: nothing half-written is kept; run the same command again to go on",
              file=sys.stderr)
        sys.exit(INTERRUPTED)
    except OSError as e:
        sys.exit(f"error: {os_error_line(e)}")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: must be at least 1")
    return n


def seconds(text: str) -> float:
    """argparse type: a duration of 0 or more seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more seconds")
    return value
