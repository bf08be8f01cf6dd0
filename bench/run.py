"""Run the benchmarks (`make bench`) into results/bench/; `make readme` publishes them into bench/ and README.md.

    python -m bench.run                       # all of them, into results/bench/ (results.md, results.json, figure)
    python -m bench.run --only q1_train       # one (the others keep their last results in the files)
    python -m bench.run --quick               # a smoke run: few iterations, written to a temporary folder
    python -m bench.run --readme-only         # `make readme`: publish results/bench/ into bench/, then README's
                                              # headline section from bench/results.json; nothing measured

Each benchmark runs as its own process (`python -m bench.NAME`) with every BLAS/OpenMP thread count
set to --threads; the figures that matter are the ratios within one run, not the absolute times.
Stock Caffe (CAFFE_OPENMP=0), which frameworks and q1_train time against the OpenMP build .venv uses,
is found or built once first (tools/setup/stock_prefix.sh; 4-5 minutes on 2 cores the first time).
A run writes only under results/bench/ (started from the committed bench/results.json, so that a run
of one benchmark keeps the others' numbers). The committed bench/results.json, results.md and figure,
and the measured section of README.md between its `bench:headline` markers (headline_markdown() of
bench/results.json), change only through `make readme` (a test checks that the two agree).
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import machine
from bench.common import DEFAULT_THREADS, FIGURES_ENV, STOCK_ENV, loadavg, stock_prefix, thread_env
from tools import paths, runinfo
from tools.cli import exit_on
from tools.fileio import atomic_path, read_json, write_text
from tools.readme_sections import replace_between

BENCHMARKS = {  # name -> module under bench/, in the order they run and appear
    "frameworks": "frameworks",
    "q1_train": "q1_train",
    "data_path": "data_path",
    "transfer": "transfer",
    "q2_features": "q2_features",
    "q3_loops": "q3_loops",
    "downloads": "downloads",
    "setup": "setup_time",
    "snapshot_check": "snapshot_check",
}
NEEDS_STOCK = ("frameworks", "q1_train")  # these time stock Caffe too
HERE = Path(__file__).resolve().parent  # the committed, published results
RUN_OUT = paths.REPO / "results" / "bench"  # where a run writes
PUBLISHED = ("results.json", "results.md", "q2_time_to_accuracy.png")
README = paths.REPO / "README.md"
START, END = "<!-- bench:headline:start -->", "<!-- bench:headline:end -->"
# The goals of the OpenMP work (README, "Benchmarks")
GOAL_OVER_TORCH = 0.85  # Caffe with OpenMP: at most 0.85x PyTorch's forward+backward time
GOAL_Q1_SPEEDUP = 1.4  # Q1 per-variant training: at least 1.4x faster than stock Caffe
GOAL_TRAIN_OVER_TIME_PCT = 10.0  # `caffe train` within 10% of `caffe time`
GOAL_FEATURES_OVER_TORCH = 0.85  # Q2 feature extraction (JPEG to fc7, with mirror images): at most 0.85x PyTorch's time


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


# ---- goals ------------------------------------------------------------------------------------------

def _layer_note(case) -> str:
    """Where the OpenMP build's time goes per layer type: stock -> OpenMP ms, speed-up, share of the OpenMP time."""
    rows = [r for r in case.get("layer_types_before_after", []) if r["type"] != "Input" and r["openmp_ms"] > 0]
    top = sorted(rows, key=lambda r: -r["openmp_ms"])[:4]
    return ", ".join(f"{r['type']} {fmt(r['stock_ms'])} -> {fmt(r['openmp_ms'])} ms"
                     + (f" ({r['speedup']:.2f}x; {r['openmp_share_pct']:.0f}%)" if r["speedup"] else "") for r in top)


def goals(data) -> list[dict]:
    """Each goal of the OpenMP work with its measured value from this run: {goal, target, measured, holds, by,
    limit}; `by`: how far a missed goal is off; `limit`: what the time goes to. Goals whose benchmark has not
    run (or ran before it measured what the goal needs) are left out."""
    b = data.get("benchmarks", {})
    out = []
    fw = b.get("frameworks", {}).get("cases", {})
    for key in ("alexnet_b16", "q1_dropout_b128"):
        c = fw.get(key)
        if not c or "stock" not in c:
            continue
        ratio = c["ratio_caffe_over_torch_mean"]
        rounds = ", ".join(f"{v:.2f}" for v in c.get("ratio_openmp_over_torch_per_round", []))
        holds = ratio <= GOAL_OVER_TORCH
        ceil = c.get("of_gemm_ceiling")
        ceiling = (f"; of its own library's GEMM ceiling: Caffe {100 * ceil['openmp']:.0f}%, PyTorch "
                   f"{100 * ceil['torch']:.0f}% (at equal ceilings the ratio would be "
                   f"{ceil['torch'] / ceil['openmp']:.2f})" if ceil else "")
        dnn = c.get("onednn", {}).get("share_pct")
        if dnn:
            ceiling += f"; PyTorch's oneDNN time in layout reorders: {dnn.get('reorder', 0):.0f}%"
        out.append({"goal": f"{c['name']}, batch {c['batch']}, forward+backward: Caffe with OpenMP / PyTorch",
                    "target": f"<= {GOAL_OVER_TORCH}", "measured": f"{ratio:.2f} (rounds {rounds})", "holds": holds,
                    "by": "" if holds else f"needs {ratio / GOAL_OVER_TORCH:.2f}x less time",
                    "limit": f"{c['stock']['forward_backward_s'] * 1000:.0f} -> "
                             f"{c['caffe']['forward_backward_s'] * 1000:.0f} ms ({c['speedup_openmp_over_stock']:.2f}x "
                             "over stock), PyTorch "
                             f"{c['torch']['mean'] * 1000:.0f} ms; per layer type: {_layer_note(c)}{ceiling}"})
    q1 = b.get("q1_train", {})
    if q1.get("variants"):
        worst = q1["variants"][q1["worst"]]
        speed = q1["min_speedup"]
        holds = speed >= GOAL_Q1_SPEEDUP
        note = (f"slowest gain: {q1['worst']} (training iterations {worst['speedup_train']:.2f}x, test passes "
                f"{worst['speedup_test']:.2f}x)")
        if "q1_dropout_b128" in fw and "stock" in fw["q1_dropout_b128"]:
            note += f"; Q1 ConvNet per layer type (batch 128): {_layer_note(fw['q1_dropout_b128'])}"
        out.append({"goal": f"Q1 training per variant ({q1['setup']['max_iter']} iterations with test passes): "
                            "speed-up over stock Caffe",
                    "target": f">= {GOAL_Q1_SPEEDUP}x",
                    "measured": ", ".join(f"{v} {r['speedup']:.2f}x" for v, r in q1["variants"].items()),
                    "holds": holds, "by": "" if holds else f"the slowest needs {GOAL_Q1_SPEEDUP / speed:.2f}x more",
                    "limit": note})
    dp = b.get("data_path", {}).get("cases", {})
    for keys, what in ((("q1_dropout", "q1_dropout_augment"), "Q1"), (("alexnet_256",), "Q2 default path")):
        cases = {k: dp[k] for k in keys if k in dp}
        if not cases or "build" not in b.get("data_path", {}):
            continue
        worst_key = max(cases, key=lambda k: cases[k]["overhead_vs_caffe_time_pct"])
        w = cases[worst_key]
        over = w["overhead_vs_caffe_time_pct"]
        holds = over <= GOAL_TRAIN_OVER_TIME_PCT
        gap_ms = 1000 * (w["train_data_s"] - w["train_input_s"])
        alone_ms = 1000 * w["data_alone_s"]
        if "real_vs_zeros_compute_ms" in w:  # measured where the gap goes (caffe time, real data against zeros)
            largest = "; ".join(f"{g['layer']} {g['pass']} {fmt(g['real_ms'])} against {fmt(g['zeros_ms'])} ms"
                                for g in w["real_vs_zeros_largest"][:2] if g["gap_ms"] > 0)
            why = (f", {fmt(gap_ms)} ms an iteration; `caffe time` on real data against Input's zeros: the compute "
                   f"layers {w['real_vs_zeros_compute_ms']:+.2f} ms" + (f" (largest: {largest})" if largest else "")
                   + f", the data layer's forward {fmt(w['data_layer_forward_ms'] or 0)} ms; its own work "
                   f"{fmt(alone_ms)} ms a batch alone")
        else:  # results from before that measurement
            why = (f", {fmt(gap_ms)} ms an iteration, far more than the data layer's own work ({fmt(alone_ms)} ms a "
                   "batch alone)" if gap_ms > 0 and alone_ms < 0.5 * gap_ms else
                   f"; the data layer alone takes {fmt(alone_ms)} ms a batch on its one thread" if gap_ms > 0 else "")
        out.append({"goal": f"{what}: `caffe train` over `caffe time` ({', '.join(c['net'] for c in cases.values())})",
                    "target": f"<= +{GOAL_TRAIN_OVER_TIME_PCT:.0f}%",
                    "measured": ", ".join(f"{c['overhead_vs_caffe_time_pct']:+.1f}%" for c in cases.values()),
                    "holds": holds, "by": "" if holds else f"{over - GOAL_TRAIN_OVER_TIME_PCT:.1f} points over",
                    "limit": f"{w['net']}: the data path {w['data_path_overhead_pct']:+.1f}% (against the same "
                             f"training with Input layers){why}; the solver's update and the rest "
                             f"{w['solver_update_pct']:+.1f}% (Input-layer training against `caffe time`, "
                             f"{fmt(1000 * w['caffe_time_s'])} ms)"})
    qf = b.get("q2_features", {}).get("cases", {}).get("wikiart")
    if qf and "ratio_toolkit_over_torch" in qf:
        ratio = qf["ratio_toolkit_over_torch"]
        holds = ratio <= GOAL_FEATURES_OVER_TORCH
        rounds = ", ".join(f"{v:.2f}" for v in qf["ratio_per_round"])
        per = {side: {k: 1000 * v / qf["images"] for k, v in qf["stages"][side].items()} for side in qf["stages"]}
        out.append({"goal": f"Q2 feature extraction, {qf['name']}, image + mirror image to fc7: Caffe (the toolkit's "
                            "path) / PyTorch",
                    "target": f"<= {GOAL_FEATURES_OVER_TORCH}", "measured": f"{ratio:.2f} (rounds {rounds})",
                    "holds": holds, "by": "" if holds else f"needs {ratio / GOAL_FEATURES_OVER_TORCH:.2f}x less time",
                    "limit": f"ms per image, Caffe / PyTorch: forward to fc7 {fmt(per['toolkit']['forward'])} / "
                             f"{fmt(per['torch']['forward'])}, waiting for the decoder "
                             f"{fmt(per['toolkit']['wait'])} / {fmt(per['torch']['wait'])}, transform "
                             f"{fmt(per['toolkit']['transform'])} / {fmt(per['torch']['transform'])}; the toolkit "
                             f"{qf['speedup_over_before']:.2f}x faster than its previous path"})
    return out


def goals_table(data, limits_of_missed_only=False) -> list[str]:
    """The goals as a Markdown table; what limits each (per-layer times before and after, the data path) for
    every goal, or only for the missed ones."""
    rows = goals(data)
    if not rows:
        return []
    lines = ["| goal | target | measured | holds | what limits it |", "|---|---|---|---|---|"]
    for g in rows:
        verdict = "yes" if g["holds"] else f"**no**: {g['by']}"
        limit = "-" if limits_of_missed_only and g["holds"] else fmt(g["limit"])
        cells = [fmt(g["goal"]), fmt(g["target"]), fmt(g["measured"]), verdict, limit]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


# ---- README's headline section ----------------------------------------------------------------------

def _headline_rows(data) -> list[tuple[str, str]]:
    b = data.get("benchmarks", {})
    rows = []
    for c in b.get("frameworks", {}).get("cases", {}).values():
        if "stock" in c:
            rows.append((f"{c['name']}, batch {c['batch']}, forward+backward ms: stock Caffe / Caffe OpenMP / PyTorch",
                         f"{1000 * c['stock']['forward_backward_s']:.0f} / "
                         f"{1000 * c['caffe']['forward_backward_s']:.0f} / {1000 * c['torch']['mean']:.0f} (OpenMP "
                         f"{c['speedup_openmp_over_stock']:.2f}x faster than stock; "
                         f"{c['ratio_caffe_over_torch_mean']:.2f}x PyTorch's time)"))
        else:
            rows.append((f"{c['name']}, batch {c['batch']}, forward+backward: Caffe / PyTorch",
                         f"{c['ratio_caffe_over_torch_mean']:.2f} (means)"))
    q1 = b.get("q1_train", {})
    if q1.get("variants"):
        secs = ", ".join(f"{v} {fmt(r['stock_caffe_s'])} -> {fmt(r['openmp_caffe_s'])}"
                         for v, r in q1["variants"].items())
        rows.append((f"Q1 `caffe train` per variant, {q1['setup']['max_iter']} iterations with test passes, s: stock "
                     "-> OpenMP", secs))
        if all("stock_make_q1_s" in r for r in q1["variants"].values()):
            whole = [sum(r[f"{k}_make_q1_s"] for r in q1["variants"].values()) for k in ("stock", "openmp")]
            rows.append(("`make q1` on Fashion-MNIST, all five variants (projected from those runs), minutes: stock -> "
                         "OpenMP", f"{whole[0] / 60:.1f} -> {whole[1] / 60:.1f}"))
    for c in b.get("data_path", {}).get("cases", {}).values():
        rows.append((f"`caffe train` over `caffe time`: {c['path']}, {c['net']}",
                     f"{c['overhead_vs_caffe_time_pct']:+.1f}% (data path alone {c['data_path_overhead_pct']:+.1f}%)"))
    t = b.get("transfer", {})
    if t.get("modes"):
        reach = "; ".join(f"{m.replace('_', ' ')} {v['accuracy']:.2f} in {v['seconds']:.0f} s"
                          for m, v in t["modes"].items() if m != "scratch")
        figure = f" ([figure](bench/{t['figure']}))" if t.get("figure") else ""
        rows.append((f"Q2 offline transfer task, validation accuracy and wall time per mode ({t.get('iterations')} "
                     "iterations)", reach + figure))
    for c in b.get("q2_features", {}).get("cases", {}).values():
        if "images_per_s" in c:
            ips = c["images_per_s"]
            rows.append((f"Q2 feature extraction, images (+ mirror images) per second, {c['name']}: before / now / "
                         "PyTorch", f"{fmt(ips['before'])} / {fmt(ips['toolkit'])} / {fmt(ips['torch'])} "
                         f"({c['ratio_toolkit_over_torch']:.2f}x PyTorch's time)"))
    q3 = b.get("q3_loops", {}).get("summary", {})
    if "class_visualization" in q3:
        cv = q3["class_visualization"]
        rows.append(("Q3 class visualisation: Python overhead over bare pycaffe forward+backward",
                     f"{cv['python_overhead_pct']:+.1f}%"))
        rows.append(("Q3 class visualisation, Caffe / PyTorch autograd input gradient",
                     f"{cv['over_torch']:.2f} (PyTorch computing weight gradients too); {cv['over_torch_frozen']:.2f} "
                     "(PyTorch with frozen weights)"))
    dl = b.get("downloads", {}).get("results", {})
    if dl:
        s = next(iter(dl.values()))["seconds"]
        if all(k in s for k in ("1", "16", "64")):
            rows.append(("`download_wikiart.py` at 16 / 64 workers, against 1 (50 ms latency per request)",
                         f"{s['1'] / s['16']:.1f}x / {s['1'] / s['64']:.1f}x"))
    sc = b.get("snapshot_check", {})
    if sc.get("whole_check_s"):
        rows.append((f"Checking a full AlexNet snapshot before a resume ({sc['megabytes']:.0f} MB: SHA-256 against the "
                     "record, parse, finite weights), s", f"{sc['whole_check_s']:.1f} (loading those weights: "
                     f"{sc['weights_load_s']:.1f})"))
    st = b.get("setup", {}).get("results", {})
    for name, v in st.items():
        if name.startswith("make setup"):
            rows.append(("`make setup` on a built tree", f"{v['median']:.2f} s"))
    return rows


def headline_markdown(results) -> str:
    """README's measured section, from results.json's content: the goals of the OpenMP work with the numbers of
    the last run, then the headline figures of every benchmark. Deterministic: the same results, the same text."""
    m = results.get("machine", {})
    load = m.get("loadavg_start")
    load_text = f"; load average {load[0]:.2f} at its start" if load else ""
    took = f"; the whole run took {runinfo.duration(results['total_seconds'])}" if results.get("total_seconds") else ""
    lines = [f"Measured by `make bench` on {m.get('date', '?')} ({m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
             f"{m.get('threads_used', '?')} threads{load_text}{took}); written from `bench/results.json` "
             "(details: [`bench/results.md`](bench/results.md)).", ""]
    table = goals_table(results, limits_of_missed_only=True)
    if table:
        lines += ["Goals of the OpenMP build (`make bench` compares it with stock Caffe, built with CAFFE_OPENMP=0, "
                  "and PyTorch in one run):", "", *table]
    rows = _headline_rows(results)
    if rows:
        lines += ["| what | measured |", "|---|---|", *[f"| {fmt(a)} | {fmt(b)} |" for a, b in rows], ""]
    return "\n".join(lines).rstrip() + "\n"


def readme_section(text: str) -> str | None:
    """The text between README's bench:headline markers (without the newline after the start marker), or None."""
    m = re.search(re.escape(START) + r"\n(.*?)" + re.escape(END), text, re.DOTALL)
    return m.group(1) if m else None


def replace_section(text: str, section: str) -> str:
    """`text` with the part between the markers replaced by `section`; ValueError without the markers."""
    if readme_section(text) is None:
        raise ValueError(f"no '{START}' ... '{END}' section")
    return replace_between(text, START, END, f"{START}\n{section}{END}")


def write_readme(results, readme=README) -> bool:
    """Rewrite README's headline section from `results`; False (and a message) when it has no markers."""
    text = Path(readme).read_text()
    try:
        new = replace_section(text, headline_markdown(results))
    except ValueError:
        print(f"[bench] {readme} has no {START} ... {END} section: not updated", file=sys.stderr)
        return False
    if new != text:
        write_text(readme, new)
    print(f"[bench] {readme}: headline section written from the results", file=sys.stderr)
    return True


def publish(src=RUN_OUT, dest=HERE) -> list[Path]:
    """Copy a run's results (results.json, results.md, the figure) from `src` into the committed `dest`;
    returns the files that changed. Nothing to copy when `src` holds no results.json."""
    changed = []
    if not (Path(src) / "results.json").exists():
        return changed
    for name in PUBLISHED:
        f = Path(src) / name
        if not f.exists():
            continue
        data, target = f.read_bytes(), Path(dest) / name
        if not target.exists() or target.read_bytes() != data:
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
            changed.append(target)
    return changed


# ---- results.md --------------------------------------------------------------------------------------

def markdown(data) -> str:
    m = data["machine"]
    p = m["peak"]
    fw_builds = data["benchmarks"].get("frameworks", {}).get("builds")
    lines = ["# Benchmarks (`make bench`)", "",
             "Speed of the toolkit against what a user would pick instead, as ratios measured side by side in one "
             "run. Regenerate with `make bench` (or `python -m bench.run`; `--only NAME` for one benchmark). "
             "Raw numbers: `bench/results.json`. What each benchmark measures: `bench/README.md`.", "",
             "| | |", "|---|---|",
             f"| date | {m['date']} |",
             f"| CPU | {m['cpu']} ({m['vendor']}), {m['cores']} cores |",
             f"| threads used | {m['threads_used']} (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, torch.set_num_threads) |",
             f"| fp32 peak | {p['formula']} (nominal clock from /proc/cpuinfo) |",
             f"| Caffe | {m['caffe_build']} (built {m['caffe_built']}; openmp={m.get('caffe_openmp', '?')}), the "
             "build .venv uses |"]
    if fw_builds:
        s = fw_builds["stock"]
        lines.append(f"| stock Caffe | {s['name']} (built {s['built']}; links {s['openblas']}) |")
    if m.get("loadavg_start"):
        lines.append(f"| load average at the start | {' / '.join(f'{v:.2f}' for v in m['loadavg_start'])} (1 / 5 / 15 "
                     "min): OpenMP's barriers make the 2-thread build slow when other processes want the cores, so "
                     "the figures mean something only on an otherwise idle machine |")
    lines += [f"| OpenBLAS | {m['openblas']} |",
              f"| numpy, torch | {m['numpy']}, {m['torch']} |",
              f"| Python, kernel | {m['python']}, {m['kernel']} |", ""]
    table = goals_table(data)
    if table:
        lines += ["## Goals", "", *table]
    for i, name in enumerate((n for n in BENCHMARKS if n in data["benchmarks"]), 1):
        r = data["benchmarks"][name]
        title = re.sub(r"^\d+\.\s*", "", r.get("title", name))
        when = f"{r.get('date', '?')}, {r.get('bench_seconds', '?')} s" + (", --quick" if r.get("quick") else "")
        if "background" in r:
            b = r["background"]
            when += (f"; meanwhile other processes used {b['other_processes_cores']:.2f} of {m['cores']} cores and "
                     f"the host stole {b['steal_cores']:.2f}")
        if r.get("loadavg_start"):
            when += f"; load average {r['loadavg_start'][0]:.2f} at its start"
        lines += [f"## {i}. {title}", "", f"_`--only {name}`; {when}_", ""]
        if "error" in r:
            lines += ["Failed:", "", "```", r["error"], "```", ""]
            continue
        for t in r.get("tables", []):
            lines += markdown_table(t)
        if r.get("figure"):
            lines += [f"![{title}]({r['figure']})", ""]
    if data.get("total_seconds"):
        lines += [f"Whole run: {data['total_seconds']:.0f} s."]
    return "\n".join(lines).rstrip() + "\n"


# ---- running -----------------------------------------------------------------------------------------

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


def run_one(name, quick, threads, logs: Path, env: dict) -> dict:
    out = logs / f"{name}.json"
    log = logs / f"{name}.log"
    cmd = [sys.executable, "-m", f"bench.{BENCHMARKS[name]}", "--json", str(out), *(["--quick"] if quick else [])]
    t0, cpu0, load0 = time.time(), cpu_seconds(), loadavg()
    with open(log, "w") as f:
        # the child's progress lines go to its log and, as they come, to our stderr
        proc = subprocess.Popen(cmd, cwd=paths.REPO, env=thread_env(threads) | env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        for line in proc.stdout:
            f.write(line)
            if line.startswith(f"[{name}]") or line.startswith("[q1]") or line.startswith("[q2]"):
                print(f"  {line.rstrip()}", file=sys.stderr, flush=True)
        proc.wait()
    seconds, load = time.time() - t0, background(cpu0, cpu_seconds())
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace")[-3000:]
        print(f"[bench] {name} FAILED after {seconds:.0f} s (log {log}):\n{tail}", file=sys.stderr)
        return {"error": tail, "bench_seconds": round(seconds, 1), "background": load, "loadavg_start": load0}
    print(f"[bench] {name}: {seconds:.0f} s (other processes {load['other_processes_cores']:.2f} cores, "
          f"steal {load['steal_cores']:.2f})", file=sys.stderr)
    return json.loads(out.read_text()) | {"background": load, "loadavg_start": load0}


def caffe_openmp() -> str:
    try:
        return paths.build_info().get("openmp", "?")
    except paths.SetupError:
        return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                    help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    ap.add_argument("--quick", action="store_true", help="few iterations, a smoke run (default output: a temp folder)")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=f"BLAS/OpenMP threads [{DEFAULT_THREADS}]")
    ap.add_argument("--out", type=Path, help="folder for results.md/results.json (default results/bench/; --quick: a "
                                             "temporary one)")
    ap.add_argument("--readme-only", action="store_true",
                    help="measure nothing (`make readme`): copy a run's results (--out, default results/bench/) into "
                         "bench/, then rewrite README's headline section from bench/results.json")
    a = ap.parse_args(argv)
    if a.readme_only:
        src = a.out or RUN_OUT
        changed = publish(src, HERE)
        if not (src / "results.json").exists():
            print(f"[bench] no run in {src}: bench/results.json kept as it is", file=sys.stderr)
        for f in changed:
            print(f"[bench] updated {f.relative_to(paths.REPO) if f.is_relative_to(paths.REPO) else f}",
                  file=sys.stderr)
        with exit_on():
            published = read_json(HERE / "results.json", expect={"benchmarks": dict},
                                  fix="restore the committed copy (git checkout bench/results.json)")
            if published is None:
                raise FileNotFoundError(2, "No such file or directory (run `make bench`)", str(HERE / "results.json"))
        return 0 if write_readme(published) else 1
    out = a.out or (Path(tempfile.mkdtemp(prefix="bench-quick-")) if a.quick else RUN_OUT)
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "results.json"
    if not previous.exists() and out.resolve() == RUN_OUT.resolve() and (HERE / "results.json").exists():
        previous = HERE / "results.json"  # the first run here keeps the published numbers of what it does not run
    with exit_on():  # a damaged earlier record: refused in one line, never overwritten (it holds measured numbers)
        data = read_json(previous, expect={"benchmarks": dict},
                         fix="move it aside (or restore it: git checkout bench/results.json) and run again") or {}
    data.setdefault("benchmarks", {})
    names = a.only or list(BENCHMARKS)
    load = loadavg()
    cores = os.cpu_count() or 1
    print(f"[bench] load average {' / '.join(f'{v:.2f}' for v in load)} (1 / 5 / 15 min) on {cores} cores",
          file=sys.stderr)
    if load and load[0] > 0.5:
        print("[bench] WARNING: other processes are using the CPU. OpenMP's barriers make the 2-thread build slow "
              "when its threads wait for a core, so these figures mean something only on an otherwise idle machine",
              file=sys.stderr)
    data["machine"] = machine.describe(a.threads) | {"loadavg_start": load, "caffe_openmp": caffe_openmp()}
    env = {FIGURES_ENV: str(out)}
    if any(n in NEEDS_STOCK for n in names):
        print("[bench] stock Caffe (CAFFE_OPENMP=0): finding it, or building it once (4-5 minutes on 2 cores)",
              file=sys.stderr, flush=True)
        env[STOCK_ENV] = str(stock_prefix())
        print(f"[bench] stock Caffe: {env[STOCK_ENV]}", file=sys.stderr)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        for k, name in enumerate(names, 1):
            print(f"[bench] {k}/{len(names)} {name} ... ({time.time() - t0:.0f} s so far)", file=sys.stderr, flush=True)
            result = run_one(name, a.quick, a.threads, Path(logs), env)
            result |= {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": a.quick,
                       "threads": a.threads}
            data["benchmarks"][name] = result
            write_text(out / "results.json", json.dumps(data, indent=1, default=float) + "\n")
            write_text(out / "results.md", markdown(data))
    data["total_seconds"] = round(time.time() - t0, 1) if a.only is None else None
    write_text(out / "results.json", json.dumps(data, indent=1, default=float) + "\n")
    write_text(out / "results.md", markdown(data))
    print(f"[bench] done in {time.time() - t0:.0f} s: {out / 'results.md'}"
          + ("; `make readme` publishes it into bench/ and README.md" if out.resolve() == RUN_OUT.resolve() else ""),
          file=sys.stderr)
    return 1 if any("error" in data["benchmarks"][n] for n in names) else 0


if __name__ == "__main__":
    with exit_on():
        sys.exit(main())
