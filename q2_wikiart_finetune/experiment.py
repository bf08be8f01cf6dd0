"""Fine-tune a pretrained AlexNet in several modes, evaluate, plot and summarise (`make q2`, the demo).

    .venv/bin/python -m q2_wikiart_finetune.experiment --seed 761218 --images 2000

For WikiArt: downloads the subset, the BVLC AlexNet weights and the ImageNet mean, then trains each
mode (cached_features, feature_extractor, finetune) with the `caffe` binary from the pretrained
weights, and writes results/q2/: train_loss_vs_iter.png, val_accuracy_vs_iter.png, summary.md
(mode, iterations, wall time, validation accuracy, per-class accuracy), per mode its log, snapshots,
confusion matrix, and submission.csv (Kaggle format) from the best mode. Reruns resume.

A mode's run is identified by its prototxts and pretrained weights: with the defaults it is
results/q2/<mode>/ (the committed models/q2/<mode>/ prototxts); any other settings (another
--max-iter, image counts that change the solver, other --weights) train in results/q2/<mode>-<hash>/
with their prototxts in results/q2/models/<mode>-<hash>/, so no run resumes or replaces another.
One experiment at a time per results folder (tools.locks).
"""

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # run as a program: quiet pycaffe's set-up log; glog reads this when caffe loads
    os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np

from q2_wikiart_finetune import features, predict
from q2_wikiart_finetune.task import MODES, WIKIART, with_counts, write_deploy
from q2_wikiart_finetune.task import files as mode_files
from q2_wikiart_finetune.task import solver as mode_solver
from tools import caffe_runner, locks, paths
from tools import weights as caffe_weights
from tools.cli import exit_on
from tools.fileio import NUMBER, atomic_path, read_json, write_prototxts, write_text
from tools.parse_log import parse_log, write_csvs
from tools.plot_log import plot_runs
from tools.solver import solver_text
from tools.transform import mean_bgr


def check_weights_fit(task, pretrained, repo=paths.REPO, require_all=False):
    """Refuse before training when the pretrained file cannot be copied into the net (Caffe would abort).

    Caffe copies weights by layer name; a last layer still called fc8 with 10 outputs cannot take
    ImageNet's 1000-way fc8, which is why the new layer has a new name and starts fresh. Layers the file
    lacks start from their fillers (a note says which), unless `require_all`: features computed through a
    random layer would be noise, so the cached-feature mode needs every layer but the new one.
    """
    import caffe

    deploy = Path(repo) / task.path("finetune", "deploy.prototxt")
    net = caffe.Net(str(deploy), caffe.TEST)
    missing = caffe_weights.check_fits(net, Path(repo) / pretrained, new_layers=[task.last_layer],
                                       require_all=require_all)
    if missing:
        print(f"[q2] note: {pretrained} has no weights for {', '.join(missing)}; they start from their fillers")


def count_lines(path) -> int:
    return sum(1 for line in Path(path).read_text().splitlines() if line.strip())


def classes_of(task, repo):
    f = Path(repo) / task.data_root / "styles.txt"
    if f.exists():
        return f.read_text().splitlines()[: task.num_classes]
    return [str(i) for i in range(task.num_classes)]


def run_folders(task, default_task, mode, pretrained=None, repo=paths.REPO) -> tuple[str, str]:
    """(prototxt folder, run folder) of one mode, relative to the repo. The committed models/ folder and
    <results>/<mode> when the prototxts and pretrained weights are the defaults' (a few failed downloads
    rarely change test_iter); else <results>/models/<mode>-<hash> and <results>/<mode>-<hash>, the hash
    being that of the prototxts and weights, so each setting keeps its own snapshots."""
    default = default_task.path(mode)
    mine = mode_files(task, mode, default)
    weights = str(pretrained if pretrained is not None else task.weights)
    if weights:
        weights = str((Path(repo) / weights).resolve())  # the default file given by another path is the default
    default_weights = str((Path(repo) / default_task.weights).resolve()) if default_task.weights else ""
    if mine == mode_files(default_task, mode, default) and weights == default_weights:
        return default, f"{task.results_dir}/{mode}"
    # the repo's own path is left out of the hash, so that a clone moved elsewhere keeps its folders
    relative = weights[len(str(Path(repo).resolve())):] if weights.startswith(str(Path(repo).resolve())) else weights
    digest = hashlib.sha256(json.dumps([sorted(mine.items()), relative]).encode()).hexdigest()[:8]
    return f"{task.results_dir}/models/{mode}-{digest}", f"{task.results_dir}/{mode}-{digest}"


def write_mode(task, mode, repo, folder, run_dir) -> Path:
    """A mode's prototxts in repo/folder, the solver snapshotting into run_dir; unchanged files stay."""
    texts = mode_files(task, mode, folder)
    solver = mode_solver(task, mode, folder)
    solver.snapshot_prefix = f"{run_dir}/snap"
    texts["solver.prototxt"] = solver_text(solver)
    write_prototxts(texts, Path(repo) / folder)
    return Path(repo) / folder


def check_counts(task):
    """Counts that would make Caffe train nothing or divide by zero, refused before any compute."""
    for field in ("train_count", "val_count", "max_iter", "batch", "val_batch", "test_interval", "stepsize",
                  "feature_max_iter"):
        value = getattr(task, field)
        if value < 1:
            where = f"{task.data_root}/{'train' if field == 'train_count' else 'val'}.txt" if "count" in field else ""
            fix = (f"{where} lists no images: see {task.data_root}/failures.csv for why the downloads failed, and "
                   "rerun the download (or give --from-dir)") if where else "give a positive number"
            raise ValueError(f"{task.name}: {field} is {value}. Fix: {fix}")


def evaluate_mode(task, mode, weights_file, repo, gpu, progress, run_dir=None):
    """Validation predictions with the deploy net: accuracy, per-class accuracy, confusion matrix.

    Reused from val_predictions.npz while the weights file is the one they were computed with.
    """
    repo = Path(repo)
    out = repo / (run_dir or f"{task.results_dir}/{mode}")
    files, labels = predict.read_list(repo / task.data_root / "val.txt", repo / task.image_root)
    cache = out / "val_predictions.npz"
    stamp = f"{Path(weights_file).resolve()}:{Path(weights_file).stat().st_mtime_ns}"
    if cache.exists():
        saved = np.load(cache)
        if str(saved["stamp"]) == stamp and len(saved["probs"]) == len(files):
            probs = saved["probs"]
            return predict.evaluate(labels, probs.argmax(axis=1), classes_of(task, repo), out / "val"), files, probs
    mean = mean_bgr(repo / task.mean_file if task.mean_file else None, task.mean_value)
    clf = predict.load_classifier(repo / task.path("finetune", "deploy.prototxt"), weights_file,
                                  new_size=task.new_size, crop=task.crop, mean=mean, gpu=gpu)
    probs = predict.predict(clf, files, progress=progress)
    with atomic_path(cache, suffix=".npz") as tmp:
        np.savez(tmp, probs=probs, stamp=stamp)
    return predict.evaluate(labels, probs.argmax(axis=1), classes_of(task, repo), out / "val"), files, probs


def train_mode(task, mode, *, pretrained, repo, gpu, progress, folder, run_dir=None, fresh=False,
               pretrained_checked=False):
    """Train one mode; returns (log path, final weights, seconds spent including feature extraction).
    `pretrained_checked`: check_weights_fit has checked `pretrained`, which is then not checked again."""
    repo = Path(repo)
    run_dir = run_dir or f"{task.results_dir}/{mode}"
    out = repo / run_dir
    t0 = time.time()
    write_mode(task, mode, repo, folder, run_dir)
    if mode == "cached_features":
        result, merged = features.run(task, pretrained=pretrained, gpu=gpu, repo=repo, progress=progress,
                                      folder=folder, run_dir=run_dir, fresh=fresh,
                                      pretrained_checked=pretrained_checked)
        return out / "train.log", merged, time.time() - t0, result
    result = caffe_runner.train(f"{folder}/solver.prototxt", out / "train.log", weights=pretrained, gpu=gpu, cwd=repo,
                                progress=progress, desc=f"{task.name}/{mode}", fresh=fresh,
                                weights_checked=pretrained_checked)
    final = out / f"snap_iter_{result.final_iter}.caffemodel"
    return out / "train.log", final, time.time() - t0, result


def run(task, modes=MODES, *, pretrained=None, repo=paths.REPO, gpu=None, progress=True,
        default_task=WIKIART, summary_title=None, fresh=False) -> dict:
    """Train and evaluate every mode of `task`; returns {mode: metrics}; writes plots and summary.md."""
    repo = Path(repo)
    check_counts(task)
    with locks.locked(repo / task.results_dir, what=f"the results folder {task.results_dir}"):
        return _run(task, modes, pretrained=pretrained, repo=repo, gpu=gpu, progress=progress,
                    default_task=default_task, summary_title=summary_title, fresh=fresh)


def timings_problem(timings: dict) -> str | None:
    """What is wrong with timings.json ({run folder: seconds}), or None."""
    return next((f"{json.dumps(k)} is {json.dumps(v)[:20]}, not a number of seconds" for k, v in timings.items()
                 if not isinstance(v, NUMBER) or isinstance(v, bool)), None)


def _run(task, modes, *, pretrained, repo, gpu, progress, default_task, summary_title, fresh) -> dict:
    out = repo / task.results_dir
    pretrained = pretrained if pretrained is not None else task.weights
    write_deploy(task, repo)  # the net every mode is evaluated with
    if pretrained:
        # the one check of the pretrained file this run, before any training: the caffe binary copies it into
        # the fine-tuned modes, and the cached-feature mode's extraction net (which needs every layer) takes it as
        # checked
        check_weights_fit(task, pretrained, repo, require_all="cached_features" in modes)
    metrics, logs, best = {}, {}, None
    timings_file = out / "timings.json"
    # damaged (cut short, or a time that is not a number): moved aside, and the times measured again
    timings = read_json(timings_file, log=lambda line: print(f"[q2] {line}"), again="timing the runs again",
                        expect=timings_problem) or {}
    for mode in modes:
        folder, run_dir = run_folders(task, default_task, mode, pretrained, repo)
        print(f"[q2] {task.name}: {mode}" + (f" (settings other than the defaults: {run_dir})"
                                              if run_dir != f"{task.results_dir}/{mode}" else ""))
        log, final, seconds, result = train_mode(task, mode, pretrained=pretrained, repo=repo, gpu=gpu,
                                                 progress=progress, folder=folder, run_dir=run_dir, fresh=fresh,
                                                 pretrained_checked=bool(pretrained))
        key = Path(run_dir).name  # timings per run folder: other settings take other times
        if not result.already_done or key not in timings:
            timings[key] = round(seconds, 1)
            write_text(timings_file, json.dumps(timings, indent=1) + "\n")
        logs[mode] = parse_log(log)
        write_csvs(logs[mode], log.parent, log.name)
        scores, files, probs = evaluate_mode(task, mode, final, repo, gpu, progress, run_dir)
        metrics[mode] = {"iterations": result.final_iter, "seconds": timings[key], "weights": str(final),
                         "run_dir": run_dir, **scores}
        if best is None or scores["accuracy"] > metrics[best]["accuracy"]:
            best, best_files, best_probs = mode, files, probs
    plot_runs(logs, "loss", out / "train_loss_vs_iter.png", test_nets=["val"],
              title=f"{task.name}: training loss (faint) and validation loss")
    plot_runs(logs, "accuracy", out / "val_accuracy_vs_iter.png", test_nets=["val"], train=False,
              title=f"{task.name}: validation accuracy")
    predict.write_submission(out / "submission.csv", [Path(f).stem for f in best_files],
                             best_probs.argmax(axis=1).tolist())
    write_summary(task, metrics, best, out, summary_title, classes_of(task, repo), pretrained=bool(pretrained))
    return metrics


def mode_label(mode: str, pretrained: bool) -> str:
    """What a mode is called in a summary: `finetune` without pretrained weights is training from scratch."""
    return mode if pretrained else f"{mode} from scratch (random fillers, no pretrained weights)"


def write_summary(task, metrics, best, out, title, classes, pretrained=True):
    """summary.md; `best` is named "the best mode" only when there were modes to choose from."""
    best_name = f"{mode_label(best, pretrained)}, the best mode" if len(metrics) > 1 else mode_label(best, pretrained)
    lines = [f"# {title or 'Q2: fine-tuning AlexNet for ' + task.name}", "",
             f"Net: AlexNet (width {task.width:g}, input {task.crop}x{task.crop} crops of {task.new_size}x"
             f"{task.new_size}), new last layer `{task.last_layer}` ({task.num_classes} classes). "
             f"Train {task.train_count} images, validation {task.val_count}.", "",
             "| mode | iterations | wall time (s) | validation accuracy |", "|---|---|---|---|"]
    lines += [f"| {mode_label(m, pretrained)} | {v['iterations']} | {v['seconds']:.0f} | {v['accuracy']:.3f} |"
              for m, v in metrics.items()]
    own = [f"`{v['run_dir']}`" for m, v in metrics.items() if v.get("run_dir", m).rsplit("/", 1)[-1] != m]
    if own:
        lines += ["", f"Settings other than the defaults: these runs are kept in {', '.join(own)}."]
    lines += ["", "Wall time: training (for cached_features: feature extraction + training), with the test passes.",
              "", f"## Per-class validation accuracy ({best_name})", "",
              "| class | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(f"{v['per_class'][c]:.2f}" for v in metrics.values()) + " |")
    lines += ["", f"Submission (Kaggle format, {best_name}): `submission.csv`. Plots: `train_loss_vs_iter.png`, "
              "`val_accuracy_vs_iter.png`; confusion matrices: `val_confusion.png` in each run's folder."]
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def prepare_wikiart(seed, images, workers, *, timeout=30, from_dir=None, weights=None, repo=paths.REPO):
    """Download the subset, the weights and the ImageNet mean (each resumes / skips when done).

    Images are stored at 256x256, the size the ImageData layers resize to anyway, so training decodes
    small JPEGs instead of full-size paintings. `from_dir` takes the images a user already has first;
    `weights` (a file the user has) replaces the download of BVLC AlexNet.
    """
    import subprocess

    wikiart = [sys.executable, "q2_wikiart_finetune/download_wikiart.py", "-s", str(seed), "-i", str(images),
               "-w", str(workers), "--timeout", str(timeout), "--resize", "256x256"]
    if from_dir:
        wikiart += ["--from-dir", str(from_dir)]
    steps = [wikiart, [sys.executable, "-m", "tools.get_ilsvrc_aux"]]
    if not weights:
        steps.insert(1, [sys.executable, "-m", "tools.download_model", "bvlc_alexnet"])
    for cmd in steps:
        if subprocess.run(cmd, cwd=repo).returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd[1:])}` failed (see above)")


def main(argv=None):
    from q2_wikiart_finetune.download_wikiart import image_count, worker_count
    from tools.cli import positive_int

    ap = argparse.ArgumentParser(prog="python -m q2_wikiart_finetune.experiment", description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--seed", type=int, default=761218, help="subset seed (the exercise: 761218)")
    ap.add_argument("-i", "--images", type=image_count, default=2000,
                    help="images to download (the exercise: 2000; -1 for the whole index)")
    ap.add_argument("-w", "--workers", type=worker_count, default=16,
                    help="download threads (default 16; -x: all cores but x)")
    ap.add_argument("--timeout", type=float, default=30, help="seconds to wait for a WikiArt server (default 30)")
    ap.add_argument("--from-dir", metavar="DIR", help="WikiArt images you already have (<Style>/<image_id>.jpg, "
                                                      "any depth): used first, the rest downloaded")
    ap.add_argument("--weights", metavar="PATH", help="pretrained AlexNet .caffemodel you already have (checked "
                                                      "against the net by shapes; default: download BVLC AlexNet)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), help=f"any of {', '.join(MODES)}")
    ap.add_argument("--max-iter", type=positive_int, help="iterations of the fine-tuning modes (default 1000); other "
                    "settings than the defaults train in their own folders")
    ap.add_argument("--fresh", action="store_true", help="train the modes anew: their previous snapshots and logs "
                    "are moved aside, and removed once the new runs have completed")
    ap.add_argument("--gpu", default=None, help="GPU id(s) (needs `make setup CAFFE_GPU=1`); default CPU")
    a = ap.parse_args(argv)
    if a.timeout <= 0:
        ap.error(f"--timeout {a.timeout:g}: give a positive number of seconds")
    with exit_on(RuntimeError, ValueError, FileNotFoundError):
        caffe_runner.gpu_args(a.gpu)  # a GPU asked of a CPU-only build: say so before any work
        for m in a.modes:
            if m not in MODES:
                raise ValueError(f"unknown mode '{m}': choose from {', '.join(MODES)}")
        weights = Path(a.weights).resolve() if a.weights else None
        if weights and not weights.is_file():
            raise FileNotFoundError(f"--weights {a.weights}: no such file. Fix: give the path of your .caffemodel "
                                    "(make q2 WEIGHTS=path), or leave it out to download BVLC AlexNet")
        if weights:
            caffe_weights.read_net(weights)  # not a weights file: said now, not after the download
        prepare_wikiart(a.seed, a.images, a.workers, timeout=a.timeout, from_dir=a.from_dir, weights=weights)
        task = with_counts(WIKIART, count_lines(paths.REPO / "data/wikiart/train.txt"),
                                 count_lines(paths.REPO / "data/wikiart/val.txt"))
        if a.max_iter:
            task = dataclasses.replace(task, max_iter=a.max_iter, stepsize=max(1, a.max_iter * 2 // 5))
        run(task, a.modes, pretrained=weights, gpu=a.gpu or None, fresh=a.fresh)


if __name__ == "__main__":
    main()
