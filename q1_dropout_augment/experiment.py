"""`make q1`: prepare data, generate the nets, train every variant with `caffe`, plot, summarise.

    .venv/bin/python -m q1_dropout_augment.experiment --dataset fashion-mnist

Writes results/q1/<dataset>/: val_loss_vs_iter.png (validation loss with and without dropout,
training loss faint), accuracy_vs_iter.png (training-subset and validation accuracy per variant),
val_loss_all.png, summary.md, nets/<variant>.png, and per variant its train.log, the log's CSV tables,
snapshots and val_full.json. Training resumes where it stopped; finished variants are not trained again.

The validation curve is sampled every test_interval iterations (41 points by default) on a fixed
class-stratified sample of the validation set (1,000 images), which costs less than the 11 passes
over all 10,000 it replaces; the final weights then go once over the whole validation set
(full_validation), and those are the numbers the summary reports.

Runs are identified by their settings: the defaults (100 per class, seed 0, the dataset's iterations)
write results/q1/<dataset>/ with the committed prototxts; any other settings write
results/q1/<dataset>-<hash of the settings>/ (settings.json inside says which), prototxts included,
so a quick try never touches a finished run. A variant whose net changed since its run is refused
unless --fresh, which moves the old snapshots and log aside until the new run has completed.
"""

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

if __name__ == "__main__":  # run as a program: quiet pycaffe's set-up log; glog reads this when caffe loads
    os.environ.setdefault("GLOG_minloglevel", "2")

from q1_dropout_augment import data, nets
from tools import caffe_runner, device, locks, paths
from tools.cli import exit_on, positive_int
from tools.datasets import DatasetError
from tools.draw_net import draw, graphviz_missing
from tools.fileio import NUMBER, move_aside, read_json, write_text
from tools.parse_log import parse_log, write_csvs
from tools.plot_log import plot_runs

TEST_NETS = ["val", "train_subset"]
NET_FILES = ("train_val.prototxt", "solver.prototxt")
DEFAULTS = {"per_class": 100, "seed": 0}
MAX_TESTS = 50  # validation passes per run at most (the defaults make 40, on the validation sample)


class RunExists(caffe_runner.CaffeError):
    """A finished or started run of another net is in the folder; replacing it needs --fresh."""


def test_interval_for(max_iter: int, interval: int) -> int:
    """Caffe tests only at multiples of test_interval, so the last test must fall on max_iter: the
    dataset's interval when it divides max_iter, else its largest divisor below that interval."""
    if max_iter % interval == 0:
        return interval
    best = max(d for d in range(1, min(interval, max_iter) + 1) if max_iter % d == 0)
    if max_iter // best > MAX_TESTS:
        nice = -(-max_iter // interval) * interval
        raise ValueError(f"--max-iter {max_iter}: validation must fall on the last iteration, and {max_iter} has no "
                         f"divisor up to {interval} that gives at most {MAX_TESTS} validation passes. Fix: use a "
                         f"multiple of {interval} (e.g. {nice}), or a round number")
    return best


def spec_for(name, info, max_iter=None) -> nets.DataSpec:
    spec = nets.DATASETS[name]
    iterations = spec.max_iter if max_iter is None else max_iter
    if iterations < 1:
        raise ValueError(f"--max-iter {iterations}: give a positive number of training iterations "
                         f"(default {spec.max_iter})")
    return dataclasses.replace(spec, train_count=info["subset_count"], val_count=info["val_count"],
                               val_sample_count=info["val_sample_count"],
                               max_iter=iterations, test_interval=test_interval_for(iterations, spec.test_interval))


def settings_of(spec, per_class, seed) -> dict:
    return {"dataset": spec.name, "per_class": per_class, "seed": seed, **dataclasses.asdict(spec)}


def out_folder(spec, per_class, seed) -> str:
    """results/q1/<dataset> for the default settings, results/q1/<dataset>-<settings hash> for any other."""
    if spec == nets.DATASETS[spec.name] and {"per_class": per_class, "seed": seed} == DEFAULTS:
        return f"results/q1/{spec.name}"
    digest = hashlib.sha256(json.dumps(settings_of(spec, per_class, seed), sort_keys=True).encode()).hexdigest()
    return f"results/q1/{spec.name}-{digest[:8]}"


def net_folder(spec, variant, out=None) -> str:
    """The committed models/q1/... folder for default settings; the run's own folder for any other."""
    if out is None or out == f"results/q1/{spec.name}":
        return nets.default_folder(spec, variant)
    return f"{out}/models/{variant}"


def check_same_nets(run_dir: Path, net_dir: Path, fresh: bool) -> bool:
    """Snapshots of another net must not be resumed, nor deleted: refuse unless `fresh`. Returns whether
    the run starts afresh (the runner then moves the old snapshots aside)."""
    digest = hashlib.sha256(b"".join((net_dir / f).read_bytes() for f in NET_FILES)).hexdigest()[:16]
    stamp = run_dir / "nets.sha256"
    try:
        recorded = stamp.read_bytes().decode().strip()
    except FileNotFoundError:
        recorded = None
    except UnicodeDecodeError:
        recorded = ""
    if recorded is not None and not re.fullmatch(r"[0-9a-f]{16}", recorded):
        # damaged: which net the snapshots are of cannot be told, so they are neither resumed nor deleted
        if not fresh:
            raise RunExists(f"{stamp} is damaged (not the 16-hex-digit digest this toolkit writes), so whether "
                            f"{run_dir}'s snapshots are of this net cannot be told; nothing was changed. Fix: rerun "
                            "with --fresh to train it anew (the old snapshots, log and this file are moved aside)")
        move_aside(stamp, "broken")
        recorded = None
    changed = recorded is not None and recorded != digest
    if changed and not fresh:
        raise RunExists(f"{run_dir} holds a run of another version of this net or solver ({net_dir} changed since); "
                        "nothing was changed. Fix: rerun with --fresh to train it anew (the old snapshots and log are "
                        "moved aside, and removed once the new run has completed)")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(stamp, digest + "\n")
    return fresh


VAL_FULL = {"weights": str, "size": int, "mtime_ns": int, "images": int, "accuracy": NUMBER, "loss": NUMBER}


def read_val_full(path, log=None, again="evaluating the final weights again") -> dict | None:
    """A variant's val_full.json, or None when there is none or it was damaged (cut short, not an object, a field
    missing or of another type): a damaged one is moved aside as val_full.json.broken, saying so (`log`)."""
    return read_json(path, log=log, expect=VAL_FULL, again=again)


def full_validation(repo: Path, folder: str, run_dir: Path, spec, gpu=None) -> dict:
    """Accuracy and loss of the final weights on the whole validation set (the prototxt's "val_full"
    input), computed once per snapshot and kept in run_dir/val_full.json."""
    weights = run_dir / f"snap_iter_{spec.max_iter}.caffemodel"
    stamp = {"weights": weights.name, "size": weights.stat().st_size, "mtime_ns": weights.stat().st_mtime_ns,
             "images": spec.val_count}
    cache = run_dir / "val_full.json"
    done = read_val_full(cache, log=lambda line: print(f"[q1] {line}"))  # a damaged one is moved aside, made again
    if done is not None and {k: done.get(k) for k in stamp} == stamp:
        return done
    import caffe

    device.select(gpu)
    with contextlib.chdir(repo):  # the prototxt's paths are relative to the repo root
        net = caffe.Net(f"{folder}/train_val.prototxt", caffe.TEST, stages=["val_full"], weights=str(weights))
        batch = net.blobs["data"].num
        passes = -(-spec.val_count // batch)
        sums = {"accuracy": 0.0, "loss": 0.0}
        for _ in range(passes):
            out = net.forward()
            for k in sums:
                sums[k] += float(out[k])
    result = {**stamp, **{k: round(v / passes, 6) for k, v in sums.items()}}
    write_text(cache, json.dumps(result, indent=1) + "\n")
    return result


def final(table, key):
    rows = [r for r in table if key in r]
    return rows[-1][key] if rows else float("nan")


def train_seconds(log) -> float:
    """A variant's training wall time, as its log measures it (glog timestamps, pauses between resumed runs
    left out): what the summary's table, the line printed after training and the demo's results all show."""
    return max((r["Seconds"] for r in [*log.train, *log.test(0)]), default=0.0)


def seconds_text(seconds: float) -> str:
    """Seconds as the tables print them: one decimal under 10 s, whole seconds above."""
    return f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"


def summarise(name, spec, info, logs: dict, out: Path, full: dict | None = None) -> str:
    """The summary table; `full` (variant -> full_validation result) gives the validation columns, else
    the last pass over the validation sample does."""
    rows = []
    for variant, log in logs.items():
        train_acc, val_acc = final(log.test(1), "accuracy"), final(log.test(0), "accuracy")
        val_loss = final(log.test(0), "loss")
        if full and variant in full:
            val_acc, val_loss = full[variant]["accuracy"], full[variant]["loss"]
        seconds = train_seconds(log)
        rows.append((variant, train_acc, val_acc, train_acc - val_acc, val_loss, seconds))
    best = max(rows, key=lambda r: r[2])
    base = next((r for r in rows if r[0] == "baseline"), None)
    lines = [
        f"# Q1 on {name}: dropout and data augmentation",
        "",
        f"Dataset: **{name}**, training subset of {info['subset_count']} images ({info['per_class']} per class, "
        f"seed {info['seed']}), validation curve on a fixed sample of {spec.val_sample_count} test images every "
        f"{spec.test_interval} iterations, final validation numbers on all {info['val_count']} test images; "
        f"{spec.max_iter} iterations of batch {nets.BATCH} per variant; augmentation = mirror + random "
        f"{spec.crop}x{spec.crop} crops of the {spec.size}x{spec.size} images (centre crop in TEST); every variant "
        "subtracts the subset's mean image and scales by 1/255.",
        "",
        "| variant | train accuracy | val accuracy | gap | final val loss | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {v} | {t:.3f} | {va:.3f} | {g:+.3f} | {vl:.3f} | {seconds_text(s)} |" for v, t, va, g, vl, s in rows]
    lines += ["", "Validation accuracy and loss: the final weights on the whole validation set; training accuracy: "
              "the last test pass over the training subset, through the TEST net (without dropout or "
              "augmentation).", ""]
    if base:
        reading = (f"**Reading:** the baseline reaches {base[1]:.2f} training but {base[2]:.2f} validation accuracy "
                   f"(gap {base[3]:+.2f}); ")
        if len(rows) == 1:
            reading += "only the baseline ran, so there is nothing to compare it with (--variants)."
        elif best[0] != "baseline":
            reading += (f"{best[0]} has the best validation accuracy, {best[2]:.2f} ({best[2] - base[2]:+.2f} "
                        f"against the baseline), with a gap of {best[3]:+.2f}.")
        else:
            others = ", ".join(r[0] for r in rows if r[0] != "baseline")
            reading += f"none of the variants run with it ({others}) beat it on validation accuracy in this run."
        lines.append(reading)
    nets_note = "; nets: `nets/`" if (out / "nets").is_dir() else ""  # none drawn without Graphviz
    lines += ["", f"Figures: `val_loss_vs_iter.png`, `accuracy_vs_iter.png`, `val_loss_all.png`{nets_note}."]
    text = "\n".join(lines) + "\n"
    write_text(out / "summary.md", text)
    return text


def run(dataset="auto", per_class=100, seed=0, variants=nets.VARIANTS, max_iter=None, gpu=None,
        repo=paths.REPO, progress=True, archive=None, fresh=False) -> Path:
    repo = Path(repo)
    if per_class < 1:
        raise ValueError(f"--per-class {per_class}: give a positive number of training images per class")
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"--max-iter {max_iter}: give a positive number of training iterations")
    for v in variants:
        nets.flags(v)
    name = data.resolve(dataset, repo, archive)
    # One experiment per dataset at a time: every run of it reads data/q1/<dataset>, which another
    # run with other options would rewrite.
    with locks.locked(repo / "data" / "q1" / name, what=f"the data folder data/q1/{name}"):
        info = data.prepare(name, per_class, seed, repo, archive=archive)
        spec = spec_for(name, info, max_iter)
        out_rel = out_folder(spec, per_class, seed)
        out = repo / out_rel
        if out_rel != f"results/q1/{name}":
            write_text(out / "settings.json", json.dumps(settings_of(spec, per_class, seed), indent=1) + "\n")
            print(f"[q1] settings other than the defaults: this run is kept in {out_rel}/ (settings.json says which); "
                  f"the default run in results/q1/{name}/ is left as it is")
        logs, full = {}, {}
        no_diagrams = graphviz_missing()
        if no_diagrams:
            print(f"[q1] {no_diagrams}")
        for i, variant in enumerate(variants, 1):
            folder = net_folder(spec, variant, out_rel)
            nets.write(spec, variant, repo, folder, run_folder=f"{out_rel}/{variant}")
            run_dir = out / variant
            start_fresh = check_same_nets(run_dir, repo / folder, fresh)
            print(f"[q1] {name} {i}/{len(variants)}: {variant}")
            result = caffe_runner.train(f"{folder}/solver.prototxt", run_dir / "train.log", gpu=gpu, cwd=repo,
                                        progress=progress, desc=f"{name}/{variant}", fresh=start_fresh)
            logs[variant] = parse_log(run_dir / "train.log")
            # the log's own time, as the summary's table shows it (not counting Caffe's start-up)
            took = f"{seconds_text(train_seconds(logs[variant]))} s of training"
            if result.already_done:
                print(f"[q1]   already trained ({result.final_iter} iterations): {took}")
            else:
                print(f"[q1]   trained to iteration {result.final_iter}: {took}")
            full[variant] = full_validation(repo, folder, run_dir, spec, gpu)
            write_csvs(logs[variant], run_dir, "train.log")
            png = out / "nets" / f"{variant}.png"
            prototxt = repo / folder / "train_val.prototxt"
            if not no_diagrams and (not png.exists() or png.stat().st_mtime < prototxt.stat().st_mtime):
                draw(prototxt, png, phase="TRAIN")
        pair = {v: logs[v] for v in ("baseline", "dropout") if v in logs} or logs
        plot_runs(pair, "loss", out / "val_loss_vs_iter.png", test_nets=TEST_NETS, test_indices=[0], zoom=True,
                  title=f"{name}: validation loss with and without dropout (training loss faint)")
        plot_runs(logs, "loss", out / "val_loss_all.png", test_nets=TEST_NETS, test_indices=[0], train=False,
                  zoom=True,
                  title=f"{name}: validation loss, every variant")
        plot_runs(logs, "accuracy", out / "accuracy_vs_iter.png", test_nets=TEST_NETS, train=False,
                  title=f"{name}: accuracy on the training subset (dashed) and validation (solid)")
        print(summarise(name, spec, info, logs, out, full))
        print(f"[q1] results in {out}")
    return out


def main(argv=None):
    from tools.download import DownloadError

    ap = argparse.ArgumentParser(prog="python -m q1_dropout_augment.experiment",
                                 description="Train Q1's variants with caffe and write plots and a summary.")
    ap.add_argument("--dataset", default="auto",
                    help="cifar10, fashion-mnist, or auto: CIFAR-10 when it can be had, else Fashion-MNIST")
    ap.add_argument("--per-class", type=positive_int, default=100,
                    help="training-subset images per class (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subset (default 0)")
    ap.add_argument("--variants", nargs="+", default=list(nets.VARIANTS), help=f"any of {', '.join(nets.VARIANTS)}")
    ap.add_argument("--max-iter", type=positive_int,
                    help="training iterations per variant (default: per dataset); other "
                    "settings than the defaults get their own results folder")
    ap.add_argument("--fresh", action="store_true", help="train the variants anew: their previous snapshots and log "
                    "are moved aside, and removed once the new run has completed")
    ap.add_argument("--gpu", default=None, help="GPU id(s) (needs `make setup CAFFE_GPU=1`); default CPU")
    ap.add_argument("--archive", metavar="PATH", help="a cifar-10-python.tar.gz you have, used where it is and "
                    "never downloaded over (implies --dataset cifar10; make q1 CIFAR10_ARCHIVE=PATH)")
    a = ap.parse_args(argv)
    with exit_on(DatasetError, DownloadError, ValueError):
        caffe_runner.gpu_args(a.gpu)  # a GPU asked of a CPU-only build: say so before any work
        for v in a.variants:
            nets.flags(v)
        run(a.dataset, a.per_class, a.seed, a.variants, a.max_iter, a.gpu or None, archive=a.archive, fresh=a.fresh)


if __name__ == "__main__":
    main()
