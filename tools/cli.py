"""How the toolkit's command lines end: an expected failure is one line, `error: ...`, and exit status 1,
never a traceback.

    with exit_on(DatasetError, ValueError):     # the failures this command expects, besides the common ones
        run(...)

The common ones, caught by every command: Caffe failures and a refused run (tools.caffe_runner),
a missing set-up (tools.paths.SetupError), a folder another run holds (tools.locks.Busy), a damaged state
file (tools.fileio.DamagedFile), an interrupted training (how to resume) and any OSError (the file, what
the system said, and the fix: os_error_line).
`cli_errors` is the same helper under the name tools.caffe_runner has used.
"""

import contextlib
import errno
import sys
from pathlib import Path


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
    else:
        fix = "check the file and its disk, then run the same command again"
    return f"{where}: {e.strerror or e}" + (f" (errno {e.errno})" if e.errno else "") + f". Fix: {fix}"


@contextlib.contextmanager
def exit_on(*expected: type[BaseException]):
    """Within the block, the common failures and `expected` end the program with `error: <message>` (status
    1); an interrupted training says how to resume."""
    # imported here, not at the top: tools.caffe_runner imports this module
    from tools import caffe_runner, locks, paths
    from tools.fileio import DamagedFile

    try:
        yield
    except (caffe_runner.CaffeError, paths.SetupError, locks.Busy, DamagedFile, *expected) as e:
        sys.exit(f"error: {e}")
    except caffe_runner.TrainingInterrupted as e:
        sys.exit(str(e) if str(e) else "interrupted: Caffe saved a snapshot; run the same command again to resume")
    except OSError as e:
        sys.exit(f"error: {os_error_line(e)}")


cli_errors = exit_on
