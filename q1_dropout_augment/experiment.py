"""`make q1`: prepare data, generate the nets, train every variant with `caffe`, plot, summarise.

    python -m q1_dropout_augment.experiment --dataset fashion-mnist

Writes results/q1/<dataset>/: val_loss_vs_iter.png (validation loss with and without dropout,
training loss faint), accuracy_vs_iter.png (training-subset and validation accuracy per variant),
val_loss_all.png, summary.md, nets/<variant>.png, and per variant its train.log, the log's CSV tables
and snapshots. Training resumes where it stopped; finished variants are not trained again.
"""

import argparse
import dataclasses
import hashlib
import shutil
import time
from pathlib import Path

from q1_dropout_augment import data, nets
from tools import caffe_runner, paths
from tools.datasets import DatasetError
from tools.draw_net import draw
from tools.fileio import write_text
from tools.parse_log import parse_log, write_csvs
from tools.plot_log import plot_runs

TEST_NETS = ["val", "train_subset"]
NET_FILES = ("train_val.prototxt", "solver.prototxt")


def spec_for(name, info, max_iter=None) -> nets.DataSpec:
    spec = nets.DATASETS[name]
    return dataclasses.replace(spec, train_count=info["subset_count"], val_count=info["val_count"],
                               max_iter=max_iter or spec.max_iter)


def net_folder(spec, variant) -> str:
    """The committed models/q1/... folder for default settings; a results/ folder for any other."""
    if spec == nets.DATASETS[spec.name]:
        return nets.default_folder(spec, variant)
    return f"results/q1/{spec.name}/models/{variant}"


def fresh_start_if_changed(run_dir: Path, net_dir: Path):
    """Snapshots of a different net must not be resumed: start over when the prototxts changed."""
    digest = hashlib.sha256(b"".join((net_dir / f).read_bytes() for f in NET_FILES)).hexdigest()[:16]
    stamp = run_dir / "nets.sha256"
    if stamp.exists() and stamp.read_text().strip() != digest:
        print(f"[q1] {run_dir.name}: the net or solver changed since the last run; starting it afresh")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(stamp, digest + "\n")


def final(table, key):
    rows = [r for r in table if key in r]
    return rows[-1][key] if rows else float("nan")


def summarise(name, spec, info, logs: dict, out: Path) -> str:
    rows = []
    for variant, log in logs.items():
        train_acc, val_acc = final(log.test(1), "accuracy"), final(log.test(0), "accuracy")
        val_loss = final(log.test(0), "loss")
        seconds = max((r["Seconds"] for r in [*log.train, *log.test(0)]), default=0.0)
        rows.append((variant, train_acc, val_acc, train_acc - val_acc, val_loss, seconds))
    best = max(rows, key=lambda r: r[2])
    base = next((r for r in rows if r[0] == "baseline"), None)
    lines = [
        f"# Q1 on {name}: dropout and data augmentation",
        "",
        f"Dataset: **{name}**, training subset of {info['subset_count']} images ({info['per_class']} per class, "
        f"seed {info['seed']}), validation on all {info['val_count']} test images; {spec.max_iter} iterations of "
        f"batch {nets.BATCH} per variant; augmentation = mirror + random {spec.crop}x{spec.crop} crops of the "
        f"{spec.size}x{spec.size} images (centre crop in TEST); every variant subtracts the subset's mean image "
        "and scales by 1/255.",
        "",
        "| variant | train accuracy | val accuracy | gap | final val loss | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {v} | {t:.3f} | {va:.3f} | {g:+.3f} | {vl:.3f} | {s:.0f} |" for v, t, va, g, vl, s in rows]
    lines += ["", "Accuracies are those of the last test pass (training accuracy: the training subset run "
              "through the TEST net, without dropout or augmentation).", ""]
    if base:
        reading = (f"**Reading:** the baseline reaches {base[1]:.2f} training but {base[2]:.2f} validation accuracy "
                   f"(gap {base[3]:+.2f}); ")
        if best[0] != "baseline":
            reading += (f"{best[0]} has the best validation accuracy, {best[2]:.2f} ({best[2] - base[2]:+.2f} "
                        f"against the baseline), with a gap of {best[3]:+.2f}.")
        else:
            reading += "no regulariser beat the baseline on validation accuracy in this run."
        lines.append(reading)
    lines += ["", "Figures: `val_loss_vs_iter.png`, `accuracy_vs_iter.png`, `val_loss_all.png`; nets: `nets/`."]
    text = "\n".join(lines) + "\n"
    write_text(out / "summary.md", text)
    return text


def run(dataset="auto", per_class=100, seed=0, variants=nets.VARIANTS, max_iter=None, gpu=None,
        repo=paths.REPO, progress=True, archive=None) -> Path:
    repo = Path(repo)
    name = data.resolve(dataset, repo, archive)
    info = data.prepare(name, per_class, seed, repo, archive=archive)
    spec = spec_for(name, info, max_iter)
    out = repo / "results" / "q1" / name
    logs = {}
    for i, variant in enumerate(variants, 1):
        folder = net_folder(spec, variant)
        nets.write(spec, variant, repo, folder)
        run_dir = out / variant
        fresh_start_if_changed(run_dir, repo / folder)
        print(f"[q1] {name} {i}/{len(variants)}: {variant}")
        t0 = time.time()
        result = caffe_runner.train(f"{folder}/solver.prototxt", run_dir / "train.log", gpu=gpu, cwd=repo,
                                    progress=progress, desc=f"{name}/{variant}")
        if result.already_done:
            print(f"[q1]   already trained ({result.final_iter} iterations)")
        else:
            print(f"[q1]   trained to iteration {result.final_iter} in {time.time() - t0:.0f} s")
        logs[variant] = parse_log(run_dir / "train.log")
        write_csvs(logs[variant], run_dir, "train.log")
        (out / "nets").mkdir(parents=True, exist_ok=True)
        png = out / "nets" / f"{variant}.png"
        if not png.exists() or png.stat().st_mtime < (repo / folder / "train_val.prototxt").stat().st_mtime:
            draw(repo / folder / "train_val.prototxt", png, phase="TRAIN")
    pair = {v: logs[v] for v in ("baseline", "dropout") if v in logs} or logs
    plot_runs(pair, "loss", out / "val_loss_vs_iter.png", test_nets=TEST_NETS, test_indices=[0],
              title=f"{name}: validation loss with and without dropout (training loss faint)")
    plot_runs(logs, "loss", out / "val_loss_all.png", test_nets=TEST_NETS, test_indices=[0], train=False,
              title=f"{name}: validation loss, every variant")
    plot_runs(logs, "accuracy", out / "accuracy_vs_iter.png", test_nets=TEST_NETS, train=False,
              title=f"{name}: accuracy on the training subset (dashed) and validation (solid)")
    print(summarise(name, spec, info, logs, out))
    print(f"[q1] results in {out}")
    return out


def main(argv=None):
    from tools.download import DownloadError

    ap = argparse.ArgumentParser(prog="python -m q1_dropout_augment.experiment",
                                 description="Train Q1's variants with caffe and write plots and a summary.")
    ap.add_argument("--dataset", default="auto",
                    help="cifar10, fashion-mnist, or auto: CIFAR-10 when it can be had, else Fashion-MNIST")
    ap.add_argument("--per-class", type=int, default=100, help="training-subset images per class (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subset (default 0)")
    ap.add_argument("--variants", nargs="+", default=list(nets.VARIANTS), help=f"any of {', '.join(nets.VARIANTS)}")
    ap.add_argument("--max-iter", type=int, help="training iterations per variant (default: per dataset)")
    ap.add_argument("--gpu", default=None, help="GPU id(s) (needs `make setup CAFFE_GPU=1`); default CPU")
    ap.add_argument("--archive", metavar="PATH", help="a cifar-10-python.tar.gz you have, used where it is and "
                    "never downloaded over (implies --dataset cifar10; make q1 CIFAR10_ARCHIVE=PATH)")
    a = ap.parse_args(argv)
    with caffe_runner.cli_errors(DatasetError, DownloadError, ValueError):
        caffe_runner.gpu_args(a.gpu)  # a GPU asked of a CPU-only build: say so before any work
        for v in a.variants:
            nets.flags(v)
        run(a.dataset, a.per_class, a.seed, a.variants, a.max_iter, a.gpu or None, archive=a.archive)


if __name__ == "__main__":
    main()
