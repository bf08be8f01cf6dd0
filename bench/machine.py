"""The machine and the versions a run measured: CPU, cores, clock, peak fp32 GFLOP/s, Caffe, numpy, torch, OpenBLAS.

Peak fp32 = cores x clock (GHz) x FMA units x fp32 lanes per FMA x 2 (a fused multiply-add is 2 flops).
Lanes: 16 with AVX-512, 8 with AVX2+FMA, 4 otherwise. FMA units per core: 2 on Intel (Skylake-SP and
later Xeons issue two 512-bit FMAs per cycle; a few low-end SKUs have one), 1 x 512-bit on AMD Zen 4
(its two 256-bit FMA pipes take a 512-bit op in two halves, the same 32 flops per cycle), 2 otherwise.
The clock is the nominal one /proc/cpuinfo gives; AVX-512 code may run slower, so this is an upper bound.
"""

import ctypes
import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from tools import paths


def cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo."""
    info = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.split("\n\n")[0].splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    return info


def peak(cores=None) -> dict:
    """Theoretical fp32 peak with its inputs (see the module docstring)."""
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = cores or os.cpu_count() or 1
    ghz = float(info.get("cpu MHz", "0") or 0) / 1000
    vendor = info.get("vendor_id", "")
    if "avx512f" in flags:
        lanes, units = 16, (1 if vendor == "AuthenticAMD" else 2)
    elif "fma" in flags and "avx2" in flags:
        lanes, units = 8, 2
    else:
        lanes, units = 4, 1
    per_cycle = units * lanes * 2
    return {"cores": cores, "ghz": round(ghz, 3), "fma_units": units, "fp32_lanes": lanes,
            "flops_per_cycle_per_core": per_cycle, "gflops": round(cores * ghz * per_cycle, 1),
            "formula": f"{cores} cores x {ghz:.2f} GHz x {units} FMA x {lanes} fp32 lanes x 2 = "
                       f"{cores * ghz * per_cycle:.0f} GFLOP/s"}


def openblas() -> str:
    """OpenBLAS's own description of itself (version, target core), from the library Caffe links."""
    for name in ("libopenblas.so.0", "libopenblas.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return f"{lib.openblas_get_config().decode().strip()} (core {lib.openblas_get_corename().decode()})"
    return "not found"


def version(package) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(threads: int) -> dict:
    info = cpuinfo()
    try:
        caffe_build = paths.caffe_prefix().name
        built = paths.build_info().get("built", "")
    except paths.SetupError as e:
        caffe_build, built = f"none ({e})", ""
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": info.get("model name", platform.processor()),
        "vendor": info.get("vendor_id", ""),
        "cores": os.cpu_count(),
        "threads_used": threads,
        "peak": peak(),
        "kernel": kernel,
        "python": platform.python_version(),
        "caffe_build": caffe_build,
        "caffe_built": built,
        "numpy": version("numpy"),
        "torch": version("torch"),
        "openblas": openblas(),
    }
