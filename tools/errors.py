"""The one base of every failure the toolkit expects and can explain in a line, with the fix.

A command ends through tools.cli.exit_on, which prints such a failure as `error: <message>` and exits 1;
the classes below it (CaffeError, DatasetError, DamagedFile, ...) live beside the code that raises them.
This module imports nothing, so any module can derive from it without an import circle.
"""


class ToolkitError(Exception):
    """An expected failure: its message names the file or setting at fault and what to do about it."""
