"""Curves of several training runs on one figure: train faint, test bold, one colour per run.

    .venv/bin/python -m tools.plot_log a.log b.log --metric loss --out fig.png

Writes the PNG for people and `fig.csv` beside it (run, phase, NumIters, Seconds, value) for tools.
`--zoom` adds a panel with the test curves zoomed in around where they turn, the best point of each
marked (Q1's validation loss: where the net starts to overfit).
"""

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tools.cli import exit_on  # noqa: E402
from tools.fileio import atomic_path  # noqa: E402
from tools.parse_log import Log, parse_log  # noqa: E402

TEST_STYLES = ["-", "--", ":", "-."]


def curves(runs: dict[str, Log], metric: str, test_nets=None, train=True, test_indices=None):
    """(run, phase, xs, seconds, ys) for every table that has `metric`; phases 'train', then test names.
    `test_indices` keeps only those test nets (default: all)."""
    out = []
    for name, log in runs.items():
        if train and any(metric in r for r in log.train):
            rows = [r for r in log.train if metric in r]
            out.append((name, "train", [r["NumIters"] for r in rows], [r["Seconds"] for r in rows],
                        [r[metric] for r in rows]))
        for k, table in enumerate(log.tests):
            rows = [r for r in table if metric in r]
            if not rows or (test_indices is not None and k not in test_indices):
                continue
            phase = test_nets[k] if test_nets and k < len(test_nets) else ("test" if k == 0 else f"test{k}")
            out.append((name, phase, [r["NumIters"] for r in rows], [r["Seconds"] for r in rows],
                        [r[metric] for r in rows]))
    return out


def plot_runs(runs: dict[str, Log], metric: str, out, *, test_nets=None, test_indices=None, title=None,
              train=True, ylabel=None, logy=False, zoom=False) -> Path:
    """One figure of `metric` against iterations for every run; returns the PNG path (CSV beside it).

    `zoom`: a second panel beside the first with the test curves only, its y range chosen from the data
    around where they turn (zoom_range), and each curve's best point marked (the lowest loss, the highest
    accuracy or other metric)."""
    out = Path(out)
    data = curves(runs, metric, test_nets, train, test_indices)
    if not data:
        raise ValueError(f"no run has an output named '{metric}' (have: {_outputs(runs)})")
    tests = [d for d in data if d[1] != "train"]
    zoom = zoom and bool(tests)
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(13, 5) if zoom else (8, 5), dpi=110, squeeze=False)
    ax = axes[0][0]
    colours = {name: f"C{i}" for i, name in enumerate(runs)}
    phases = [p for p in dict.fromkeys(d[1] for d in data) if p != "train"]
    for name, phase, xs, _, ys in data:
        if phase == "train":
            ax.plot(xs, ys, color=colours[name], alpha=0.3, linewidth=1, label=f"{name} (train)")
        else:
            style = TEST_STYLES[phases.index(phase) % len(TEST_STYLES)]
            ax.plot(xs, ys, style, color=colours[name], linewidth=2.2, label=f"{name} ({phase})")
    lo, hi = _focus(data)
    if hi > lo:
        ax.set_ylim(lo, hi)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel or metric)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title or f"{metric} against iterations", fontsize=10 if zoom else None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2 if len(data) > 6 else 1)
    if zoom:
        _zoom_panel(axes[0][1], tests, colours, phases, metric, ylabel)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    with atomic_path(out.with_suffix(".csv")) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "phase", "NumIters", "Seconds", metric])
        for name, phase, xs, secs, ys in data:
            w.writerows([name, phase, x, s, y] for x, s, y in zip(xs, secs, ys, strict=True))
    return out


def _focus(data, skip=0.05):
    """A y range that shows every test point, the whole curve, and leaves out only the training points
    of the first iterations (a training loss of 2.3 at iteration 0 would flatten the part worth
    seeing), padded a little; the CSV keeps every point."""
    last = max((max(xs) for _, _, xs, _, _ in data if xs), default=0)
    ys = [y for _, phase, xs, _, yv in data for x, y in zip(xs, yv, strict=True)
          if phase != "train" or x >= skip * last]
    if not ys:
        return 0.0, 0.0
    lo, hi = min(ys), max(ys)
    pad = 0.08 * (hi - lo or abs(hi) or 1.0)
    return lo - pad, hi + pad


def best_point(xs, ys, metric: str) -> tuple:
    """(iteration, value) of a test curve's best point: the lowest loss, the highest of anything else
    (accuracy); the first one on a tie."""
    pick = min if "loss" in metric else max
    value = pick(ys)
    return xs[ys.index(value)], value


def zoom_range(tests, metric: str, pad=0.15) -> tuple[float, float]:
    """The y range of the zoomed panel: every test curve from its best point on (where a validation loss
    turns and rises again when the net overfits), or its second half when it is still improving near
    its end; the first iterations, where the loss falls from ln(classes), are left out, and so is a
    lone spike (the range reaches the 90th percentile of those points and each curve's last one; the
    left panel shows everything)."""
    ys, ends = [], []
    for _, _, xs, _, yv in tests:
        i = xs.index(best_point(xs, yv, metric)[0])
        ys += yv[i:] if len(yv) - i >= max(3, len(yv) // 4) else yv[len(yv) // 2:]
        ends.append(yv[-1])
    ys.sort()
    lo = ys[0] if "loss" in metric else ys[(len(ys) - 1) // 10]
    hi = ys[-1 - (len(ys) - 1) // 10] if "loss" in metric else ys[-1]
    lo, hi = min(lo, *ends), max(hi, *ends)
    margin = pad * (hi - lo or abs(hi) or 1.0)
    return lo - margin, hi + margin


def _zoom_panel(ax, tests, colours, phases, metric, ylabel):
    word = "lowest" if "loss" in metric else "highest"
    for name, phase, xs, _, ys in tests:
        style = TEST_STYLES[phases.index(phase) % len(TEST_STYLES)]
        x_best, y_best = best_point(xs, ys, metric)
        ax.plot(xs, ys, style, color=colours[name], linewidth=2.2, marker=".",
                label=f"{name} ({phase}): {word} {y_best:.3f} at iteration {x_best:,}")
        ax.plot([x_best], [y_best], "o", markersize=10, markerfacecolor="none", markeredgewidth=2,
                color=colours[name])
    lo, hi = zoom_range(tests, metric)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel or metric)
    ax.set_title(f"zoomed in: {', '.join(phases)} {metric}, its {word} point circled", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _outputs(runs):
    names = set()
    for log in runs.values():
        for table in [log.train, *log.tests]:
            for row in table:
                names.update(k for k in row if k not in ("NumIters", "Seconds", "LearningRate"))
    return ", ".join(sorted(names)) or "none"


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.plot_log",
        description="Plot loss or accuracy against iterations for several Caffe logs on one figure "
        "(train faint, test bold); writes OUT.png and OUT.csv.",
    )
    ap.add_argument("logs", nargs="+", help="logs written by `caffe train`")
    ap.add_argument("--metric", default="loss", help="net output to plot (default: loss)")
    ap.add_argument("--out", required=True, help="PNG to write; the CSV goes beside it")
    ap.add_argument("--names", nargs="+", help="run names for the legend (default: the logs' folder names)")
    ap.add_argument("--test-nets", nargs="+", help="names of the test nets in order, e.g. val train_subset")
    ap.add_argument("--no-train", action="store_true", help="leave out the training curves")
    ap.add_argument("--title")
    ap.add_argument("--zoom", action="store_true", help="a second panel: the test curves zoomed in around where "
                    "they turn, the best point of each marked")
    a = ap.parse_args(argv)
    paths = [Path(p) for p in a.logs]
    with exit_on(ValueError):
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise ValueError(f"no such log: {', '.join(missing)}")
        names = a.names or [p.parent.name if p.stem in ("train", "log") else p.stem for p in paths]
        if len(names) != len(paths):
            raise ValueError(f"{len(paths)} logs but {len(names)} --names")
        out = plot_runs({n: parse_log(p) for n, p in zip(names, paths, strict=True)}, a.metric, a.out,
                        test_nets=a.test_nets, title=a.title, train=not a.no_train, zoom=a.zoom)
    print(out)
    print(out.with_suffix(".csv"))


if __name__ == "__main__":
    main()
