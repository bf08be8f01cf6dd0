"""Where things are: the clone's folders, the Caffe install that `make setup` wired in, its binaries."""

import os
import shutil
import sys
from functools import cache
from pathlib import Path

from tools.errors import ToolkitError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TOOLKIT_DATA", REPO / "data"))
MODELS = REPO / "models"
RESULTS = Path(os.environ.get("TOOLKIT_RESULTS", REPO / "results"))


class SetupError(ToolkitError, RuntimeError):
    """Caffe or a dependency is missing; the message says how to fix it."""


@cache
def caffe_prefix() -> Path:
    """The Caffe install in use: CAFFE_ROOT, else the one `make setup` recorded in the venv."""
    if os.environ.get("CAFFE_ROOT"):
        return Path(os.environ["CAFFE_ROOT"])
    recorded = Path(sys.prefix) / "caffe-prefix"
    if recorded.exists():
        return Path(recorded.read_text().strip())
    raise SetupError("no Caffe install recorded in this Python environment: run `make setup`")


def caffe_python_dir() -> Path:
    # a source build's prefix (Debian's layout, or Caffe's own), or a wheel's site-packages
    for d in (caffe_prefix() / "lib/python3/dist-packages", caffe_prefix() / "python", caffe_prefix()):
        if (d / "caffe").is_dir():
            return d
    raise SetupError(f"{caffe_prefix()} has no pycaffe: rerun `make setup`")


def caffe_tool(name: str = "caffe") -> Path:
    """A Caffe binary (caffe, compute_image_mean, convert_imageset, ...)."""
    for candidate in (Path(sys.prefix) / "bin" / name, caffe_prefix() / "bin" / name):
        if candidate.exists():
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise SetupError(f"Caffe tool '{name}' not found in {caffe_prefix()}/bin: run `make setup`")


@cache
def build_info() -> dict[str, str]:
    """key=value lines that build_caffe.sh wrote into the prefix, or the wheel carries (variant, flags, date)."""
    for marker in (caffe_prefix() / ".complete", caffe_prefix() / "caffe_tools/build-info.txt"):
        if marker.exists():
            return dict(line.split("=", 1) for line in marker.read_text().splitlines() if "=" in line)
    return {"variant": "unknown (CAFFE_ROOT install)"}


def libcaffe() -> Path:
    """The libcaffe.so in use: in a build's lib/, or where auditwheel put it in a wheel (bvlc_caffe.libs/)."""
    for pattern in ("lib/libcaffe.so*", "bvlc_caffe.libs/libcaffe*.so*"):
        found = sorted(caffe_prefix().glob(pattern))
        if found:
            return found[0]
    raise SetupError(f"no libcaffe.so under {caffe_prefix()}: rerun `make setup`")


def is_gpu_build() -> bool:
    variant = build_info().get("variant", "")
    if variant.startswith("unknown"):
        # A Caffe we did not build: a CUDA libcaffe names the CUDA runtime it links.
        return b"libcudart" in libcaffe().read_bytes()
    return variant.startswith("gpu")


def caffe_env(extra_pythonpath=()) -> dict[str, str]:
    """Environment for the `caffe` binary.

    The binary embeds the interpreter it was linked with, not this venv, so a `Python` layer only
    imports when the venv's site-packages, pycaffe and the repo are on PYTHONPATH.
    """
    import sysconfig

    env = dict(os.environ)
    parts = [str(p) for p in extra_pythonpath]
    parts += [str(REPO), str(caffe_python_dir()), sysconfig.get_paths()["purelib"]]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["GLOG_logtostderr"] = "1"  # glog would otherwise also write files into /tmp
    # OpenMP threads that wait at the end of a parallel loop spin only briefly (libgomp's default is about
    # 30 times longer) before they sleep: on a busy machine, spinning threads take the cores the late
    # thread needs. Measured on 2 cores, Q1's net per iteration: idle 12-13 ms with 3,000-30,000 spins
    # (default 12.7, sleeping at once 20.4); beside two busy processes 76 ms with 10,000 (3,000: 99;
    # sleeping at once: 115; one thread: 30), and under a load of 6, libgomp's default took 1.7 s.
    if "OMP_WAIT_POLICY" not in env:
        env.setdefault("GOMP_SPINCOUNT", "10000")
    env["GLOG_minloglevel"] = "0"  # progress and log parsing read the INFO lines
    return env
