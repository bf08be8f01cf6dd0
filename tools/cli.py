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
import sys
from pathlib import Path

from tools.errors import ToolkitError

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def os_error_line(e: OSError) -> str:
    """One line for an OSError: the file, what the system said, and what to do."""
    where = e.filename or "a file"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = (f"free space on the disk that holds it (df -h {Path(str(where)).parent}) and run the same command "
               "again: it resumes from the last good snapshot")
    elif e.errno == errno.EFBIG:
        fix = ("raise the file-size limit (ulimit -f) and run the same command again: it resumes from the last good "
               "snapshot")
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable (or work in a clone you own) and run the same command again"
    elif e.errno == errno.EISDIR:
        fix = "give a file name, not a folder"
    else:
        fix = "check the file and its disk, then run the same command again"
    return f"{where}: {e.strerror or e}" + (f" (errno {e.errno})" if e.errno else "") + f". Fix: {fix}"


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
