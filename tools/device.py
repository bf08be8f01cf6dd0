"""The one place that decides CPU or GPU for Caffe: the `GPU` setting checked, then pycaffe switched.

    gpu_ids("0,1")      -> [0, 1]      (None, "", "cpu", "-1" -> []: the CPU)
    check_gpu("0")      refuses a GPU on a CPU-only build of Caffe, or a setting that is not device ids
    select("0")         pycaffe: caffe.set_mode_gpu() + caffe.set_device(0), returns "GPU 0" (or "CPU")

`tools.caffe_runner.gpu_args` (the `caffe` binary's `-gpu` flag), Q1's full validation, Q2's prediction
and Q3's model loading all go through `check_gpu`, so the same setting gets the same answer everywhere.
"""

from tools import paths
from tools.errors import ToolkitError

CPU_WORDS = ("", "cpu", "-1")


class DeviceError(ToolkitError, ValueError):
    """The GPU setting cannot be honoured: not device ids, or a CPU-only Caffe."""


def gpu_ids(gpu) -> list[int]:
    """Device ids from a setting like 0, "0", "0,1" or " 1 "; [] for the CPU (None, "", "cpu", "-1")."""
    if gpu is None or str(gpu).strip().lower() in CPU_WORDS:
        return []
    parts = [p.strip() for p in str(gpu).split(",")]
    if not all(p.isdigit() for p in parts):
        raise DeviceError(f"GPU={gpu!r} is not a device id: give a number such as GPU=0 (or a list like 0,1), or "
                          "leave GPU empty for the CPU")
    return [int(p) for p in parts]


def check_gpu(gpu) -> list[int]:
    """`gpu_ids(gpu)`, refused up front when it asks for a GPU and this Caffe is a CPU-only build."""
    ids = gpu_ids(gpu)
    if ids and not paths.is_gpu_build():
        raise DeviceError(f"GPU={gpu} asks for CUDA device {ids[0]}, but this Caffe ({paths.caffe_prefix()}) is a "
                          "CPU-only Caffe build: unset GPU to run on the CPU, or rebuild with `make setup CAFFE_GPU=1`")
    return ids


def select(gpu=None) -> str:
    """Put pycaffe on the CPU or on the first device of `gpu`; returns "CPU" or "GPU <id>"."""
    ids = check_gpu(gpu)
    import caffe

    if not ids:
        caffe.set_mode_cpu()
        return "CPU"
    caffe.set_mode_gpu()
    caffe.set_device(ids[0])
    return f"GPU {ids[0]}"
