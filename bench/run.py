"""Run the benchmarks (`make bench`) and write bench/results.md and bench/results.json.

    python -m bench.run                       # all of them (~11 minutes on 2 cores)
    python -m bench.run --only q3_loops       # one (others keep their last results in the files)
    python -m bench.run --quick               # a smoke run: few iterations, written to a temporary folder

Each benchmark runs as its own process (`python -m bench.NAME`) with every BLAS/OpenMP thread count
set to --threads; the figures that matter are the ratios within one run, not the absolute times.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import machine
from bench.common import DEFAULT_THREADS, thread_env
from tools import paths
from tools.fileio import write_text

BENCHMARKS = {  # name -> module under bench/
    "frameworks": "frameworks",
    "data_path": "data_path",
    "transfer": "transfer",
    "q3_loops": "q3_loops",
    "downloads": "downloads",
    "setup": "setup_time",
}
HERE = Path(__file__).resolve().parent


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        a = abs(value)
        return f"{value:,.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.2f}" if a >= 1 else \
            f"{value:.3g}"
    return str(value).replace("|", "\\|")


def markdown_table(t) -> list[str]:
    lines = [f"**{t['title']}**", "", "| " + " | ".join(t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in t["rows"]]
    if t.get("note"):
        lines += ["", t["note"]]
    return lines + [""]


def markdown(data) -> str:
    m = data["machine"]
    p = m["peak"]
    lines = ["# Benchmarks (`make bench`)", "",
             "Speed of the toolkit against what a user would pick instead, as ratios measured side by side in one "
             "run. Regenerate with `make bench` (or `python -m bench.run`; `--only NAME` for one benchmark). "
             "Raw numbers: `bench/results.json`. What each benchmark measures: `bench/README.md`.", "",
             "| | |", "|---|---|",
             f"| date | {m['date']} |",
             f"| CPU | {m['cpu']} ({m['vendor']}), {m['cores']} cores |",
             f"| threads used | {m['threads_used']} (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, torch.set_num_threads) |",
             f"| fp32 peak | {p['formula']} (nominal clock from /proc/cpuinfo) |",
             f"| Caffe | {m['caffe_build']} (built {m['caffe_built']}) |",
             f"| OpenBLAS | {m['openblas']} |",
             f"| numpy, torch | {m['numpy']}, {m['torch']} |",
             f"| Python, kernel | {m['python']}, {m['kernel']} |", ""]
    for name in BENCHMARKS:
        r = data["benchmarks"].get(name)
        if r is None:
            continue
        title = r.get("title", name)
        when = f"{r.get('date', '?')}, {r.get('bench_seconds', '?')} s" + (", --quick" if r.get("quick") else "")
        if "background" in r:
            b = r["background"]
            when += (f"; meanwhile other processes used {b['other_processes_cores']:.2f} of {m['cores']} cores and "
                     f"the host stole {b['steal_cores']:.2f}")
        lines += [f"## {title}", "", f"_`--only {name}`; {when}_", ""]
        if "error" in r:
            lines += ["Failed:", "", "```", r["error"], "```", ""]
            continue
        for t in r.get("tables", []):
            lines += markdown_table(t)
    if data.get("total_seconds"):
        lines += [f"Whole run: {data['total_seconds']:.0f} s."]
    return "\n".join(lines).rstrip() + "\n"


def cpu_seconds() -> dict:
    """Busy and stolen CPU seconds of the whole machine (/proc/stat), and those of our finished children."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        fields = [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"busy": (user + nice + system + irq + softirq) / tick, "steal": steal / tick,
            "ours": children.ru_utime + children.ru_stime, "wall": time.time()}


def background(before, after) -> dict:
    """How much of the machine others used while a benchmark ran: busy CPU not ours, and time stolen by the host."""
    wall = max(after["wall"] - before["wall"], 1e-9)
    others = max(0.0, (after["busy"] - before["busy"]) - (after["ours"] - before["ours"]))
    return {"other_processes_cores": round(others / wall, 3), "steal_cores": round((after["steal"] - before["steal"])
                                                                                  / wall, 3)}


def run_one(name, quick, threads, logs: Path) -> dict:
    out = logs / f"{name}.json"
    log = logs / f"{name}.log"
    cmd = [sys.executable, "-m", f"bench.{BENCHMARKS[name]}", "--json", str(out), *(["--quick"] if quick else [])]
    t0, cpu0 = time.time(), cpu_seconds()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=paths.REPO, env=thread_env(threads), stdout=f, stderr=subprocess.STDOUT)
    seconds, load = time.time() - t0, background(cpu0, cpu_seconds())
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace")[-3000:]
        print(f"[bench] {name} FAILED after {seconds:.0f} s (log {log}):\n{tail}", file=sys.stderr)
        return {"error": tail, "bench_seconds": round(seconds, 1), "background": load}
    print(f"[bench] {name}: {seconds:.0f} s (other processes {load['other_processes_cores']:.2f} cores, "
          f"steal {load['steal_cores']:.2f})", file=sys.stderr)
    return json.loads(out.read_text()) | {"background": load}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                    help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    ap.add_argument("--quick", action="store_true", help="few iterations, a smoke run (default output: a temp folder)")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=f"BLAS/OpenMP threads [{DEFAULT_THREADS}]")
    ap.add_argument("--out", type=Path, help="folder for results.md/results.json (default bench/; --quick: a temp one)")
    a = ap.parse_args(argv)
    out = a.out or (Path(tempfile.mkdtemp(prefix="bench-quick-")) if a.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "results.json"
    data = json.loads(previous.read_text()) if previous.exists() else {}
    data.setdefault("benchmarks", {})
    names = a.only or list(BENCHMARKS)
    data["machine"] = machine.describe(a.threads)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        for name in names:
            print(f"[bench] {name} ...", file=sys.stderr)
            result = run_one(name, a.quick, a.threads, Path(logs))
            result |= {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": a.quick,
                       "threads": a.threads}
            data["benchmarks"][name] = result
            write_text(out / "results.json", json.dumps(data, indent=1, default=float) + "\n")
            write_text(out / "results.md", markdown(data))
    data["total_seconds"] = round(time.time() - t0, 1) if a.only is None else None
    write_text(out / "results.json", json.dumps(data, indent=1, default=float) + "\n")
    write_text(out / "results.md", markdown(data))
    print(f"[bench] done in {time.time() - t0:.0f} s: {out / 'results.md'}", file=sys.stderr)
    return 1 if any("error" in data["benchmarks"][n] for n in names) else 0


if __name__ == "__main__":
    sys.exit(main())
