"""One run at a time per output folder.

    with locked("results/q1/fashion-mnist"):     # raises Busy, naming the other run's PID
        ...

The lock is an `fcntl.flock` on `<folder>/.lock`: the kernel releases it when the holder exits in any
way (Ctrl-C, a traceback, kill -9), so a stale lock never blocks anyone and there is nothing to clean
up. The file itself is never deleted (deleting a lock file lets two processes lock two different
files). Its text says who holds it (PID, start time, command), which is what a refused run prints.
Locks are re-entrant within a process: the experiment holds its folder and the functions it calls may
lock the same folder again.
"""

import contextlib
import fcntl
import os
import shlex
import sys
import threading
import time
from pathlib import Path

from tools.errors import ToolkitError


class Busy(ToolkitError, RuntimeError):
    """Another process holds the lock; the message names its PID and what to do."""

    def __init__(self, message, pid=None):
        super().__init__(message)
        self.pid = pid


_held: dict[str, list] = {}  # lock file -> [fd, depth]
_guard = threading.Lock()


def _holder(path: Path) -> tuple[int | None, str]:
    """(PID, description) of the lock's holder as it wrote them, or (None, '') if unreadable."""
    try:
        fields = dict(line.split(" ", 1) for line in path.read_text().splitlines() if " " in line)
        pid = int(fields.get("pid", ""))
    except (OSError, ValueError):
        return None, ""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None, ""  # the text is a previous holder's: the current one has not written its own yet
    except PermissionError:
        pass
    return pid, f"since {fields.get('started', '?')}: {fields.get('command', '?')}"


def held_fds() -> list[int]:
    """The descriptors of the locks this process holds: a child given them (Popen's pass_fds) holds the same
    locks, until both have exited."""
    with _guard:
        return [fd for fd, _ in _held.values()]


@contextlib.contextmanager
def locked(folder, *, name=".lock", wait=False, what=None):
    """Hold `<folder>/<name>` exclusively for the block. With `wait`, wait for the holder to finish
    (saying so once); otherwise raise Busy at once."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    with _guard:
        if key in _held:
            _held[key][1] += 1
            fd = None
        else:
            fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by children (PEP 446)
    if fd is None:
        try:
            yield path
        finally:
            with _guard:
                _held[key][1] -= 1
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, since = _holder(path)
            who = f"PID {pid} ({since})" if pid else "another process (PID not yet recorded)"
            label = what or str(folder)
            if not wait:
                stop = f"stop it (kill {pid})" if pid else "stop it"
                raise Busy(f"{label} is in use by {who}. One run at a time per folder: wait until it has "
                           f"finished, or {stop}, then run this again", pid) from None
            print(f"[lock] {label} is in use by {who}; waiting for it to finish...", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        text = f"pid {os.getpid()}\nstarted {started}\ncommand {shlex.join(sys.argv) or sys.executable}\n"
        os.pwrite(fd, text.encode(), 0)
        with _guard:
            _held[key] = [fd, 1]
        try:
            yield path
        finally:
            with _guard:
                del _held[key]
    finally:
        os.close(fd)  # releases the lock
