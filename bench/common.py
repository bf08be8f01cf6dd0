"""What every benchmark shares: thread settings, timing statistics, a child's command line, tables.

Each benchmark is a module with `run(quick: bool, work: Path) -> dict` (JSON-able, with a "tables"
list) and `main()` = `child_main(run)`; bench/run.py starts each one as its own process, so Caffe's
OpenBLAS threads and PyTorch's OpenMP threads never share a process while being timed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools import paths
from tools.cli import exit_on

THREADS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_THREADS = 2
STOCK_ENV = "BENCH_STOCK_PREFIX"  # bench/run.py finds (or builds) stock Caffe once and passes it on
FIGURES_ENV = "BENCH_FIGURES"  # where a benchmark writes its figures (bench/run.py: its output folder)


def threads() -> int:
    """The thread count of this run (bench/run.py exports it to every child through OPENBLAS_NUM_THREADS)."""
    return int(os.environ.get("OPENBLAS_NUM_THREADS", DEFAULT_THREADS))


def thread_env(n: int) -> dict:
    """os.environ with every BLAS/OpenMP thread count set to n."""
    return dict(os.environ) | {k: str(n) for k in THREADS_ENV}


def stock_prefix() -> Path:
    """Stock Caffe's prefix (CAFFE_OPENMP=0): $BENCH_STOCK_PREFIX, else tools/setup/stock_prefix.sh, which
    builds it into the cache first if it is missing (4-5 minutes on 2 cores, once)."""
    if os.environ.get(STOCK_ENV):
        return Path(os.environ[STOCK_ENV])
    proc = subprocess.run(["bash", str(paths.REPO / "tools/setup/stock_prefix.sh")], stdout=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError("tools/setup/stock_prefix.sh could not find or build stock Caffe (its messages above)")
    return Path(proc.stdout.strip().splitlines()[-1])


def prefix_info(prefix: Path) -> dict:
    """key=value lines of a Caffe prefix's .complete (openmp=0|1, built=...); {} for a Caffe we did not build."""
    marker = Path(prefix) / ".complete"
    if not marker.exists():
        return {}
    return dict(line.split("=", 1) for line in marker.read_text().splitlines() if "=" in line)


def linked_openblas(binary: Path) -> str:
    """The OpenBLAS a binary loads (ldd), e.g. openblas-openmp/libopenblas.so.0."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    for line in out.splitlines():
        if "libopenblas" in line and "=>" in line:
            target = Path(os.path.realpath(line.split("=>")[1].split("(")[0].strip()))  # through alternatives
            return "/".join(target.parts[-2:])
    return "none"


def builds() -> dict:
    """The two Caffe builds compared, as {"stock": ..., "openmp": ...}: each its binary, the folders a Python
    layer needs (its own pycaffe first), its prefix and whether it has the OpenMP patches. "openmp" is the
    build .venv uses (make setup's default)."""
    out = {}
    for key, prefix in (("stock", stock_prefix()), ("openmp", paths.caffe_prefix())):
        pydir = next((d for d in (prefix / "lib/python3/dist-packages", prefix / "python") if (d / "caffe").is_dir()),
                     None)
        info = prefix_info(prefix)
        binary = prefix / "bin" / "caffe"
        out[key] = {"caffe": str(binary), "pythonpath": [str(pydir)] if pydir else [], "prefix": str(prefix),
                    "name": prefix.name, "openmp": info.get("openmp", "0" if key == "stock" else "?"),
                    "built": info.get("built", ""), "openblas": linked_openblas(binary)}
    return out


def figures_dir(default: Path) -> Path:
    """Where to write figures: $BENCH_FIGURES (bench/run.py's output folder), else `default`."""
    out = Path(os.environ.get(FIGURES_ENV) or default)
    out.mkdir(parents=True, exist_ok=True)
    return out


def loadavg() -> list[float]:
    """The 1, 5 and 15-minute load averages."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def stats(seconds) -> dict:
    """Median, mean, min and max of per-iteration times, in seconds, and the times themselves."""
    seconds = list(seconds)
    return {"n": len(seconds), "median": statistics.median(seconds), "mean": statistics.fmean(seconds),
            "min": min(seconds), "max": max(seconds), "samples": [round(s, 6) for s in seconds]}


def timed(fn, iterations: int, warmup: int) -> dict:
    """Call fn() warmup + iterations times; stats() of the timed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return stats(out)


def python_json(args, timeout=900) -> dict:
    """Run `python -m ARGS` (a bench helper) in its own process with this run's threads; its JSON on stdout."""
    proc = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=paths.REPO, env=thread_env(threads()),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(title, columns, rows, note="") -> dict:
    """A table for results.md: rows are lists of cells (numbers are formatted by the runner)."""
    return {"title": title, "columns": list(columns), "rows": [list(r) for r in rows], "note": note}


def pct(part, whole) -> float:
    """(part - whole) / whole in percent."""
    return 100.0 * (part - whole) / whole


def child_main(run, argv=None):
    """The command line of a benchmark module: run it, write its JSON result."""
    ap = argparse.ArgumentParser(description=(sys.modules[run.__module__].__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations: a smoke run, not a measurement")
    ap.add_argument("--json", type=Path, help="write the result here (default: print it)")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    a = ap.parse_args(argv)
    t0 = time.time()
    with exit_on(), tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result = run(a.quick, Path(a.work or tmp))
    result["bench_seconds"] = round(time.time() - t0, 1)
    text = json.dumps(result, indent=1, default=float)
    if a.json:
        from tools.fileio import write_text

        write_text(a.json, text + "\n")
    else:
        print(text)
