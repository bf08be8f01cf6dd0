"""Q2 time to accuracy: cached features vs feature extractor vs full fine-tune (and scratch), on the Caffe build
.venv uses (the OpenMP one by default).

The offline demo (q2_wikiart_finetune.transfer_demo, run by `make demo`) trains every mode and writes
the numbers: wall times and accuracies to results/demo/q2/transfer_results.json (older demos:
{transfer,scratch}/timings.json and transfer_summary.md), and each mode's train.log with a validation
pass every 25 iterations. When they exist and were made with the Caffe build .venv uses now (newer
than its install), they are read (the table says so, with their date); otherwise transfer_demo.run
trains everything here, in a scratch folder, at reduced sizes.

From each mode's log: validation accuracy at every test pass against wall-clock seconds since the mode
started (the log's own seconds, shifted so that the last line falls at the mode's measured wall time:
for cached features, the feature extraction comes first). A figure (q2_time_to_accuracy.png, in
bench/ with `make bench`) and a table of how soon each mode reaches which accuracy.
"""

import dataclasses
import datetime
import re
from pathlib import Path

from bench.common import child_main, figures_dir, table
from tools import paths
from tools.fileio import read_json
from tools.parse_log import parse_log

RESULTS = "results/demo/q2"
ORDER = ("cached_features", "feature_extractor", "finetune", "scratch")
FIGURE = "q2_time_to_accuracy.png"
LABELS = {"cached_features": "cached features", "feature_extractor": "feature extractor",
          "finetune": "fine-tune", "scratch": "scratch (random fillers)"}


def log_file(repo, mode) -> Path:
    q2 = Path(repo) / RESULTS
    return q2 / "scratch" / "finetune" / "train.log" if mode == "scratch" else q2 / "transfer" / mode / "train.log"


def curve(log, total_seconds) -> list[dict]:
    """[{iteration, seconds, accuracy}] of the first test net's passes, seconds since the mode started: the
    log's seconds shifted so that its last line falls at total_seconds (the mode's measured wall time)."""
    end = max((r["Seconds"] for table in (log.train, *log.tests) for r in table), default=0.0)
    shift = max(0.0, total_seconds - end)
    return [{"iteration": r["NumIters"], "seconds": round(r["Seconds"] + shift, 2), "accuracy": r["accuracy"]}
            for r in log.test(0) if "accuracy" in r]


def first_reaching(points, level) -> float | None:
    """Seconds of the first test pass at or above `level`, or None."""
    return next((p["seconds"] for p in points if p["accuracy"] >= level - 1e-9), None)


def seconds_text(s) -> str:
    return "-" if s is None else f"{s:.1f}"


def read_demo(repo, newer_than=None) -> dict | None:
    """{modes: {mode: {seconds, accuracy, curve}}, ...} from a finished demo run under repo, or None (missing,
    incomplete, or older than `newer_than`, a time stamp: made with another Caffe build)."""
    q2 = Path(repo) / RESULTS
    logs = {m: log_file(repo, m) for m in ORDER}
    if not all(f.exists() for f in logs.values()):
        return None
    if newer_than is not None and min(f.stat().st_mtime for f in logs.values()) < newer_than:
        return None
    summary = q2 / "transfer_results.json"
    if summary.exists():  # transfer_demo's own record
        data = read_json(summary, fix="run `make demo` again (its Q2 stage writes it)")
        modes = data.get("modes", {})
        if not all(m in modes for m in ORDER):
            return None
        iterations = {modes[m].get("iterations") for m in ORDER}
        return {"modes": {m: {"seconds": modes[m]["seconds"], "accuracy": modes[m]["accuracy"],
                              "curve": curve(parse_log(logs[m]), modes[m]["seconds"])} for m in ORDER},
                "iterations": iterations.pop() if len(iterations) == 1 else None,
                "source": f"the `make demo` run of {_date(summary)} UTC ({RESULTS}/transfer_results.json, each mode's "
                          "train.log)"}
    files = [q2 / "transfer" / "timings.json", q2 / "scratch" / "timings.json", q2 / "transfer_summary.md"]
    if not all(f.exists() for f in files):
        return None
    seconds = read_json(files[0], fix="run `make demo` again (its Q2 stage times its runs anew)")
    scratch = read_json(files[1], fix="run `make demo` again (its Q2 stage times its runs anew)")
    if "finetune" in scratch:
        seconds["scratch"] = scratch["finetune"]
    summary = files[2].read_text()
    accuracy = {m.group(1): float(m.group(2)) for m in
                re.finditer(r"^\| (\w+) \| [^|]+ \| ([\d.]+) \| [\d.]+ \|$", summary, re.MULTILINE)}
    iterations = re.search(r"every mode (\d+) iterations", summary)
    if not all(m in seconds and m in accuracy for m in ORDER):
        return None
    return {"modes": {m: {"seconds": seconds[m], "accuracy": accuracy[m],
                          "curve": curve(parse_log(logs[m]), seconds[m])} for m in ORDER},
            "iterations": int(iterations.group(1)) if iterations else None,
            "source": f"the `make demo` run of {_date(*files)} UTC ({RESULTS}/transfer/timings.json, "
                      f"{RESULTS}/transfer_summary.md, each mode's train.log)"}


def _date(*files) -> str:
    stamp = max(f.stat().st_mtime for f in files)
    return f"{datetime.datetime.fromtimestamp(stamp, datetime.UTC):%Y-%m-%d %H:%M}"


def run_offline(work, quick) -> dict:
    """transfer_demo.run in a scratch folder at reduced sizes; read back like a demo run."""
    from q2_wikiart_finetune import transfer_demo

    sizes = transfer_demo.Sizes(pretrain_per_class=60 if quick else 200, pretrain_val_per_class=20, target_per_class=20,
                          target_val_per_class=20 if quick else 50, heldout_per_class=10,
                          pretrain_iter=40 if quick else 300, transfer_iter=25 if quick else 100)
    transfer_demo.run(sizes=sizes, repo=work, progress=False)
    result = read_demo(work)
    if result is None:
        raise RuntimeError(f"transfer_demo.run in {work} left no results or logs to read")
    result["source"] = f"run here by transfer_demo.run at reduced sizes {dataclasses.asdict(sizes)} (no demo results " \
                       "made with this Caffe build found)"
    return result


def plot(modes, out: Path, title) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tools.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for i, (mode, v) in enumerate(modes.items()):
        xs = [p["seconds"] for p in v["curve"]]
        ys = [p["accuracy"] for p in v["curve"]]
        style = dict(color="0.6", linestyle="--", linewidth=1.2) if mode == "scratch" else \
            dict(color=f"C{i}", linewidth=2.2)
        ax.plot(xs, ys, marker="o", markersize=4, label=f"{LABELS.get(mode, mode)} ({v['accuracy']:.3f} in "
                f"{v['seconds']:.0f} s)", **style)
    ax.set_xlabel("wall-clock seconds since the mode started (feature extraction included)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def levels(modes) -> list[float]:
    """The accuracies worth a column: each pretrained mode's final one, rounded down to 0.01, distinct."""
    return sorted({int(100 * v["accuracy"]) / 100 for m, v in modes.items() if m != "scratch"})


def run(quick, work):
    info = paths.build_info()
    built = (paths.caffe_prefix() / ".complete").stat().st_mtime if (paths.caffe_prefix() / ".complete").exists() \
        else None
    result = read_demo(paths.REPO, newer_than=built) or run_offline(work, quick)
    build = f"{paths.caffe_prefix().name} (openmp={info.get('openmp', '?')})"
    modes = result["modes"]
    base = modes["finetune"]["seconds"]
    marks = levels(modes)
    rows = [[LABELS[m], "random fillers" if m == "scratch" else "pretrained", result["iterations"], v["seconds"],
             v["seconds"] / base, v["accuracy"], len(v["curve"]),
             *[seconds_text(first_reaching(v["curve"], a)) for a in marks]]
            for m, v in modes.items()]
    figure = plot(modes, figures_dir(work) / FIGURE,
                  f"Q2 offline transfer task: validation accuracy against time ({result['iterations']} iterations "
                  "each)")
    return {"title": "4. Q2 time to accuracy (offline transfer task)", **result, "build": build,
            "openmp": info.get("openmp"), "levels": marks, "figure": figure.name, "tables": [table(
                "Wall time, validation accuracy, and seconds until each mode first reaches an accuracy (time ratio "
                "< 1: faster than full fine-tuning)",
                ["mode", "starts from", "iterations", "wall time (s)", "time / finetune", "validation accuracy",
                 "validation passes", *[f"s to >= {a:.2f}" for a in marks]], rows,
                f"Source: {result['source']}. Caffe: {build}. Wall time: training with its test passes; "
                "cached_features includes the one-off feature extraction (and its mirrored copies). Seconds to an "
                "accuracy: the first validation pass at or above it, counted from the mode's start; '-': never "
                f"within these iterations. Figure: `{figure.name}`.")]}


def main(argv=None):
    child_main(run, argv)


if __name__ == "__main__":
    main()
