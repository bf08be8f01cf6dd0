"""`make doctor`: what this toolkit has to work with, and the exact fix for what is missing.

Exits non-zero when something the toolkit needs is missing (Caffe, pycaffe, its tools) or when the copy of
Fashion-MNIST it would read is broken; Graphviz (net diagrams, skipped without it), Fashion-MNIST not yet
downloaded, and data and weights that only some commands need are listed with the command that fetches
them, without failing.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tools import datasets, paths
from tools.cli import exit_on
from tools.draw_net import GRAPHVIZ_FIX


def check(required, name, ok, detail, fix=""):
    mark = "ok  " if ok else ("FAIL" if required else "--  ")
    print(f"  [{mark}] {name:<22} {detail}")
    if not ok and fix:
        print(f"         fix: {fix}")
    return ok or not required


def python_command() -> str:
    """This interpreter as a command to type from the clone's root: `.venv/bin/python` for the toolkit's
    environment (the system Python has no pycaffe), else its full path."""
    exe = Path(sys.executable)
    try:
        return exe.relative_to(paths.REPO).as_posix()
    except ValueError:
        return str(exe)


def build_line(info: dict, gpu: bool) -> str:
    """"CPU only" or "GPU (CUDA)", the build variant when it says more (e.g. gpu-sm90), and when it was built."""
    line = "GPU (CUDA)" if gpu else "CPU only"
    variant = info.get("variant", "")
    if variant and variant.lower() not in ("cpu", "gpu"):
        line += f", variant {variant}"
    if info.get("wheel") == "1":
        line += ", from the bvlc-caffe wheel"
    if info.get("openmp") == "1":
        line += ", OpenMP layers"
    return line + f"; built {info.get('built', '?')}"


def fashion_mnist(py) -> bool:
    """Which copy of Fashion-MNIST the toolkit reads (datasets.fashion_mnist_source), checked by reading it.
    False only when that copy is broken; one not yet downloaded is listed with the command that fetches it."""
    source = datasets.fashion_mnist_source()
    here = [n for n in datasets.FASHION_MNIST_FILES if datasets.fashion_mnist_file(source.folder, n).exists()]
    if source.download and len(here) < len(datasets.FASHION_MNIST_FILES):
        have = f" ({len(here)} of its 4 files here)" if here else ""
        return check(False, "Fashion-MNIST", False,
                     f"not here yet{have}: downloaded into {source.folder}/ on first use from "
                     f"{datasets.fashion_mnist_url('')} (30 MB)",
                     f"{py} -m tools.datasets downloads it now; or set FASHION_MNIST_DIR to a folder with the four "
                     "files you have, or apt-get install dataset-fashion-mnist")
    try:
        datasets.load_fashion_mnist(download=False)
    except datasets.DatasetError as e:
        problem, _, fix = str(e).partition(". Fix: ")
        return check(True, "Fashion-MNIST", False, problem, fix)
    return check(True, "Fashion-MNIST", True, f"{source.folder} ({source.what})")


def main() -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")  # before caffe loads: no per-layer set-up log
    py = python_command()
    good = True
    print("Caffe")
    try:
        prefix = paths.caffe_prefix()
        caffe_bin = paths.caffe_tool("caffe")
        version = subprocess.run([caffe_bin, "--version"], capture_output=True, text=True, env=paths.caffe_env())
        good &= check(True, "caffe binary", version.returncode == 0, f"{version.stdout.strip()} ({caffe_bin})",
                      "make setup")
        info = paths.build_info()
        good &= check(True, "install", True, str(prefix))
        check(False, "build", True, build_line(info, paths.is_gpu_build()))
        flags = info.get("cmake_flags", "")
        blas = next((f.split("=", 1)[1] for f in flags.split() if f.startswith("-DBLAS=")), "unknown")
        threads = os.environ.get("OPENBLAS_NUM_THREADS", f"all {os.cpu_count()} cores")
        check(False, "BLAS", True, f"{blas} ({'OpenBLAS' if blas == 'Open' else blas}), threads: {threads}")
        for tool in ("compute_image_mean", "convert_imageset", "upgrade_net_proto_text"):
            try:
                good &= check(True, tool, True, str(paths.caffe_tool(tool)))
            except paths.SetupError as e:
                good &= check(True, tool, False, str(e), "make setup")
    except paths.SetupError as e:
        good &= check(True, "caffe", False, str(e), "make setup")
    try:
        import caffe

        check(True, "pycaffe", True, f"import caffe -> {caffe.__file__}")
        import google.protobuf
        import numpy

        check(False, "python", True, f"{sys.version.split()[0]}, numpy {numpy.__version__}, "
              f"protobuf {google.protobuf.__version__}")
    except Exception as e:  # noqa: BLE001 - any import failure is the thing to report
        good &= check(True, "pycaffe", False, f"import caffe failed: {e}", "make setup")

    print("GPUs")
    try:
        gpu_build = paths.is_gpu_build()
    except paths.SetupError:
        gpu_build = False
    if gpu_build:
        query = subprocess.run([paths.caffe_tool("caffe"), "device_query", "-gpu", "all"], capture_output=True,
                               text=True, env=paths.caffe_env())
        names = [ln.split("Name:", 1)[1].strip() for ln in query.stdout.splitlines() + query.stderr.splitlines()
                 if "Name:" in ln]
        check(False, "caffe device_query", bool(names), "; ".join(names) or "no CUDA device usable by Caffe",
              "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip() or "none listed"
        check(False, "nvidia-smi", True, out.replace("\n", "; "))
    else:
        check(False, "nvidia-smi", False, "no NVIDIA driver on this machine: CPU only")

    print("Tools")
    check(False, "graphviz dot", bool(shutil.which("dot")), shutil.which("dot") or "missing: net diagrams are skipped",
          GRAPHVIZ_FIX)

    print("Data and weights")
    good &= fashion_mnist(py)
    optional = [
        ("CIFAR-10", paths.DATA / "cifar10" / "cifar-10-python.tar.gz", "make q1 DATASET=cifar10 (downloads it)"),
        ("WikiArt images", paths.DATA / "wikiart" / "train.txt", f"{py} q2_wikiart_finetune/download_wikiart.py"),
        ("ImageNet mean", paths.DATA / "ilsvrc12" / "imagenet_mean.binaryproto", f"{py} -m tools.get_ilsvrc_aux"),
        ("AlexNet weights", paths.MODELS / "bvlc_alexnet" / "bvlc_alexnet.caffemodel",
         f"{py} -m tools.download_model bvlc_alexnet"),
    ]
    for name, path, fix in optional:
        check(False, name, path.exists(), str(path.relative_to(paths.REPO)) if path.exists() else "not present", fix)
    print("doctor: all required parts present" if good else "doctor: something required is missing (see fix lines)")
    return 0 if good else 1


if __name__ == "__main__":
    with exit_on():
        sys.exit(main())
