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

THREADS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_THREADS = 2


def threads() -> int:
    """The thread count of this run (bench/run.py exports it to every child through OPENBLAS_NUM_THREADS)."""
    return int(os.environ.get("OPENBLAS_NUM_THREADS", DEFAULT_THREADS))


def thread_env(n: int) -> dict:
    """os.environ with every BLAS/OpenMP thread count set to n."""
    return dict(os.environ) | {k: str(n) for k in THREADS_ENV}


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
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result = run(a.quick, Path(a.work or tmp))
    result["bench_seconds"] = round(time.time() - t0, 1)
    text = json.dumps(result, indent=1, default=float)
    if a.json:
        from tools.fileio import write_text

        write_text(a.json, text + "\n")
    else:
        print(text)
