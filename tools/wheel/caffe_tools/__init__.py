"""Caffe's command-line tools in the `bvlc-caffe` wheel: `caffe`, `compute_image_mean`, ...

The wheel holds no executables: each tool is built as a Python extension module around its unchanged
source (patch 0021), and the console scripts pip writes into the venv's `bin/` call `run` here. The tool
then runs inside this interpreter, so a `Python` layer imports from the venv it was started from, and
no libpython is needed (Debian's python3 has none unless libpython3.X is installed).
"""

import importlib
import os
import signal
import sys

TOOLS = ("caffe", "compute_image_mean", "convert_imageset", "extract_features", "upgrade_net_proto_binary",
         "upgrade_net_proto_text", "upgrade_solver_proto_text")


def build_info() -> dict[str, str]:
    """key=value lines the build recorded (variant, OpenMP, patches, CMake flags, date)."""
    path = os.path.join(os.path.dirname(__file__), "build-info.txt")
    with open(path) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def run(tool: str) -> None:
    module = importlib.import_module(f"caffe_tools.tool_{tool}")
    # Behave as the native program would: Ctrl-C, SIGTERM and a closed pipe end it (Python would
    # only set a flag that no Python code checks while Caffe runs). `caffe train` installs its own
    # SIGINT/SIGHUP handlers on top (snapshot and stop), as it does as an executable.
    for sig in (signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    status = module.main([tool, *sys.argv[1:]])
    sys.stdout.flush()
    sys.exit(status)


def _entry(tool):
    def main():
        run(tool)
    main.__name__ = tool
    return main


# one console-script function per tool (the wheel's entry points name them: `caffe = caffe_tools:caffe`)
for _tool in TOOLS:
    globals()[_tool] = _entry(_tool)
