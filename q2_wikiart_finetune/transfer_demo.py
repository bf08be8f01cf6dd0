"""The Fashion-MNIST transfer demo (`make demo`): Q2's machinery offline, with a reduced AlexNet.

The stand-in for ImageNet is Fashion-MNIST classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat):
a reduced AlexNet (same layer names, a quarter of the width, 99x99 crops of the 28x28 images
upscaled to 112x112) is trained on them from scratch and saved. The stand-in for WikiArt is classes
5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) with only a few labelled images per class: the
pretrained net is fine-tuned on them with a renamed last layer (fc8_fashion), and compared at equal
iterations with the same net trained from scratch, with the feature-extractor mode and with the
cached-feature path. Images go through the same ImageData layers, generators, runner and predictor
as WikiArt. The held-out set gets a Kaggle-format submission whose labels are the Fashion-MNIST class
numbers (5-9), as the answers are.

    .venv/bin/python -m q2_wikiart_finetune.transfer_demo            # results/demo/q2/
"""

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

if __name__ == "__main__":  # run as a program: quiet pycaffe's set-up log; glog reads this when caffe loads
    os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np
from PIL import Image

from q2_wikiart_finetune import experiment, predict
from q2_wikiart_finetune.task import MODES, Task
from q2_wikiart_finetune.task import write as write_mode
from tools import caffe_runner, paths
from tools.cli import exit_on
from tools.datasets import FASHION_MNIST_CLASSES, DatasetError, load_fashion_mnist, stratified_subset
from tools.fileio import NUMBER, atomic_path, read_json, write_if_changed, write_text
from tools.parse_log import parse_log
from tools.plot_log import plot_runs
from tools.transform import mean_bgr

SOURCE_CLASSES = [0, 1, 2, 3, 4]
TARGET_CLASSES = [5, 6, 7, 8, 9]
DATA = "data/demo/fashion"
RESULTS = "results/demo/q2"
MINI = dict(width=0.25, new_size=112, crop=99, batch=50, val_batch=50)
# The transfer runs once per seed (the solvers' random_seed: the new layer's fillers, the order of the
# images, crops, mirrors, dropout), so that the summary reports each mode's mean and range and draws a
# conclusion only from a difference larger than that range. The first seed is the committed prototxts'.
DEFAULT_SEED = 1
SEEDS = (1, 2, 3)
CARD = "results/demo/pretrained/model.json"  # the pretrained model's card, which Q3 reads
ORDER = ("cached_features", "feature_extractor", "finetune", "scratch")


@dataclasses.dataclass(frozen=True)
class Sizes:
    pretrain_per_class: int = 600
    pretrain_val_per_class: int = 100
    target_per_class: int = 20  # "tens of images per class"
    target_val_per_class: int = 100
    heldout_per_class: int = 100
    pretrain_iter: int = 1500
    transfer_iter: int = 300


def write_split(images, labels, label_map, folder: Path, list_file: Path, image_root: Path, with_labels=True):
    """PNG files + an ImageData list (`relative/path label`), written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        f = folder / f"{i:05d}.png"
        if not f.exists():
            with atomic_path(f, suffix=".png") as tmp:
                Image.fromarray(img[0]).save(tmp, format="PNG")
        rel = f.relative_to(image_root).as_posix()
        lines.append(f"{rel} {label_map[int(lab)]}" if with_labels else rel)
    write_text(list_file, "\n".join(lines) + "\n")


def plan(sizes=Sizes(), seed=0, ds=None):
    """Which Fashion-MNIST images go where, and the counts and mean the generated nets depend on."""
    ds = ds or load_fashion_mnist()

    def pick(y, classes, per_class, exclude=()):
        keep = np.flatnonzero(np.isin(y, classes) & ~np.isin(np.arange(len(y)), list(exclude)))
        return keep[stratified_subset(y[keep], per_class, seed)]

    split = {"pretrain_train": pick(ds.train_labels, SOURCE_CLASSES, sizes.pretrain_per_class),
             "pretrain_val": pick(ds.test_labels, SOURCE_CLASSES, sizes.pretrain_val_per_class),
             "target_train": pick(ds.train_labels, TARGET_CLASSES, sizes.target_per_class),
             "target_val": pick(ds.test_labels, TARGET_CLASSES, sizes.target_val_per_class)}
    split["heldout"] = pick(ds.test_labels, TARGET_CLASSES, sizes.heldout_per_class, exclude=split["target_val"])
    mean = float(ds.train_images[split["pretrain_train"]].mean())
    info = {"sizes": dataclasses.asdict(sizes) | {"seed": seed}, "mean_value": [round(mean, 3)] * 3,
            **{k: len(v) for k, v in split.items()}}
    return split, info


# What prepared.json always holds besides its sizes: the mean and the images per split
PREPARED = {"sizes": dict, "mean_value": list, "pretrain_train": int, "pretrain_val": int, "target_train": int,
            "target_val": int, "heldout": int}


def prepare(sizes=Sizes(), repo=paths.REPO, seed=0) -> dict:
    """Fashion-MNIST as image folders and list files, the way WikiArt is laid out; skipped when done."""
    root = Path(repo) / DATA
    marker = root / "prepared.json"
    want = dataclasses.asdict(sizes) | {"seed": seed}
    # a damaged one (cut short, a field missing or of another type) is moved aside and the data prepared again
    done = read_json(marker, log=lambda line: print(f"[demo] {line}"), expect=PREPARED,
                     again="preparing the data again")
    if done is not None and done.get("sizes") == want:
        return done
    ds = load_fashion_mnist()
    split, info = plan(sizes, seed, ds)
    images = root / "images"
    src_map = {c: i for i, c in enumerate(SOURCE_CLASSES)}
    tgt_map = {c: i for i, c in enumerate(TARGET_CLASSES)}
    for name, source, label_map, list_file in (
            ("pretrain_train", "train", src_map, "pretrain/train.txt"),
            ("pretrain_val", "test", src_map, "pretrain/val.txt"),
            ("target_train", "train", tgt_map, "target/train.txt"),
            ("target_val", "test", tgt_map, "target/val.txt"),
            ("heldout", "test", tgt_map, "heldout.txt")):
        idx = split[name]
        x, y = getattr(ds, f"{source}_images")[idx], getattr(ds, f"{source}_labels")[idx]
        write_split(x, y, label_map, images / name, root / list_file, images, with_labels=name != "heldout")
    # the held-out answers stay apart from the list, as a contest keeps them, as Fashion-MNIST class numbers
    held = ds.test_labels[split["heldout"]]
    write_text(root / "heldout_answers.csv",
               "id,label\n" + "".join(f"{i:05d},{int(lab)}\n" for i, lab in enumerate(held)))
    write_text(root / "pretrain/styles.txt", "\n".join(FASHION_MNIST_CLASSES[c] for c in SOURCE_CLASSES) + "\n")
    write_text(root / "target/styles.txt", "\n".join(FASHION_MNIST_CLASSES[c] for c in TARGET_CLASSES) + "\n")
    write_text(marker, json.dumps(info, indent=1) + "\n")
    return info


def pretrain_task(info, sizes=Sizes()) -> Task:
    return Task(
        name="fashion-pretrain", data_root=f"{DATA}/pretrain", image_root=f"{DATA}/images/", num_classes=5,
        last_layer="fc8", weights="", models_dir="models/demo/pretrain", results_dir=f"{RESULTS}/pretrain",
        mean_value=tuple(info["mean_value"]), train_count=info["pretrain_train"], val_count=info["pretrain_val"],
        base_lr=0.01, stepsize=sizes.pretrain_iter * 2 // 3, max_iter=sizes.pretrain_iter, test_interval=100,
        snapshot=500, **MINI)


def transfer_task(info, pretrained, sizes=Sizes(), name="fashion-transfer", results="transfer", seed=DEFAULT_SEED,
                  **changes):
    """The transfer run of one seed: the default seed's prototxts are the committed models/demo/<results>/,
    another seed's (only its solver's random_seed differs) live with its run, in results/demo/q2/seed-<n>/."""
    models_dir, results_dir = f"models/demo/{results}", f"{RESULTS}/{results}"
    if seed != DEFAULT_SEED:
        models_dir, results_dir = f"{RESULTS}/seed-{seed}/models/{results}", f"{RESULTS}/seed-{seed}/{results}"
    return dataclasses.replace(Task(
        name=name, data_root=f"{DATA}/target", image_root=f"{DATA}/images/", num_classes=5, seed=seed,
        last_layer="fc8_fashion", weights=pretrained, models_dir=models_dir,
        results_dir=results_dir, mean_value=tuple(info["mean_value"]), train_count=info["target_train"],
        val_count=info["target_val"], base_lr=0.001, stepsize=sizes.transfer_iter * 2 // 3,
        max_iter=sizes.transfer_iter, test_interval=25, snapshot=sizes.transfer_iter,
        # this small net's fc7 activations are small (std ~0.1): the lone new layer needs a larger rate
        feature_max_iter=sizes.transfer_iter, feature_lr=0.5, extractor_lr=0.05, **MINI), **changes)


def pretrain(info, sizes=Sizes(), repo=paths.REPO, gpu=None, progress=True) -> Path:
    """Train the reduced AlexNet on the source classes; returns its weights and writes the model card."""
    repo = Path(repo)
    task = pretrain_task(info, sizes)
    metrics = experiment.run(task, ["finetune"], pretrained="", repo=repo, gpu=gpu, progress=progress,
                             default_task=task, summary_title="Demo pretraining: reduced AlexNet on Fashion-MNIST 0-4")
    weights = Path(metrics["finetune"]["weights"])
    card = {
        "name": "demo reduced AlexNet (Fashion-MNIST classes 0-4)",
        "weights": str(weights.relative_to(repo)) if weights.is_relative_to(repo) else str(weights),
        "classes": [FASHION_MNIST_CLASSES[c] for c in SOURCE_CLASSES],
        "width": task.width, "crop": task.crop, "new_size": task.new_size, "channels": 3,
        "mean_value": list(task.mean_value), "raw_scale": 255,
        "val_accuracy": round(metrics["finetune"]["accuracy"], 4),
        "description": (f"AlexNet at width {task.width:g} (same layer names), trained by `make demo` from scratch "
                        f"for {task.max_iter} iterations on {task.train_count} Fashion-MNIST images of classes 0-4, "
                        f"upscaled to {task.new_size}x{task.new_size} with {task.crop}x{task.crop} crops; the offline "
                        f"stand-in for BVLC AlexNet (validation accuracy {metrics['finetune']['accuracy']:.3f})."),
    }
    # only when it changed: its date tells Q3 the model changed
    write_if_changed(repo / CARD, json.dumps(card, indent=1) + "\n")
    return weights


def transfer_seed(info, weights, sizes=Sizes(), repo=paths.REPO, gpu=None, progress=True, seed=DEFAULT_SEED):
    """Fine-tune / feature-extract / cached features from the pretrained net, and scratch, at equal
    iterations, with one seed; returns ({mode: metrics}, the transfer task, the scratch task)."""
    repo = Path(repo)
    rel = str(weights.relative_to(repo)) if weights.is_relative_to(repo) else str(weights)
    task = transfer_task(info, rel, sizes, seed=seed)
    results = experiment.run(task, MODES, repo=repo, gpu=gpu, progress=progress, default_task=task,
                             summary_title=f"Demo transfer: Fashion-MNIST 5-9 from the 0-4 model (seed {seed})")
    # the same net and iterations without the pretrained weights (at the pretraining learning rate)
    scratch = transfer_task(info, "", sizes, name="fashion-scratch", results="scratch", base_lr=0.01, seed=seed)
    from_scratch = experiment.run(scratch, ["finetune"], pretrained="", repo=repo, gpu=gpu, progress=progress,
                                  default_task=scratch, summary_title=f"Demo: the same net from scratch (seed {seed})")
    results["scratch"] = from_scratch["finetune"]
    return results, task, scratch


def transfer(info, weights, sizes=Sizes(), repo=paths.REPO, gpu=None, progress=True, seeds=SEEDS) -> dict:
    """transfer_seed() for every seed; the figures and the held-out submission come from the first seed's
    runs, the summary's means and ranges from all of them. Returns {seed: {mode: metrics}}."""
    repo = Path(repo)
    runs, tasks = {}, {}
    for k, seed in enumerate(seeds, 1):
        print(f"[demo q2] transfer with seed {seed} ({k} of {len(seeds)})")
        results, task, scratch = transfer_seed(info, weights, sizes, repo, gpu, progress, seed)
        runs[seed], tasks[seed] = results, (task, scratch)
    task, scratch = tasks[seeds[0]]
    logs = {m: parse_log(repo / (scratch.results_dir + "/finetune" if m == "scratch" else f"{task.results_dir}/{m}")
                         / "train.log") for m in ORDER}
    out = repo / RESULTS
    plot_runs(logs, "accuracy", out / "transfer_accuracy_vs_iter.png", test_nets=["val"], train=False,
              title=f"Fashion-MNIST 5-9 from {info['target_train']} images: validation accuracy (seed {seeds[0]})")
    plot_runs(logs, "loss", out / "transfer_loss_vs_iter.png", test_nets=["val"],
              title=f"Fashion-MNIST 5-9: training loss (faint) and validation loss (seed {seeds[0]})")
    first = runs[seeds[0]]
    score = heldout_submission(task, Path(first[max(MODES, key=lambda m: first[m]["accuracy"])]["weights"]),
                               repo, gpu, progress)
    write_comparison(runs, info, sizes, out)
    write_results(runs, score, info, repo)
    return runs


def spread(runs: dict, mode: str, key: str) -> dict:
    """Mean, lowest and highest of one mode's `key` over the seeds' runs."""
    values = [r[mode][key] for r in runs.values()]
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "n": len(values)}


def compare(a: dict, b: dict) -> int:
    """1 when every run of a is above every run of b, -1 when every one is below, 0 when their ranges
    overlap (or there is one run each: no spread measured), so that no conclusion is drawn."""
    if a["n"] < 2 or b["n"] < 2:
        return 0
    if a["min"] > b["max"]:
        return 1
    if a["max"] < b["min"]:
        return -1
    return 0


def conclusions(runs: dict) -> list[str]:
    """What the runs show, said only where the ranges over the seeds do not overlap."""
    n = len(runs)
    over = f"over {n} seeds" if n > 1 else "in a single run"
    ft, sc = spread(runs, "finetune", "accuracy"), spread(runs, "scratch", "accuracy")
    diff = ft["mean"] - sc["mean"]
    verdict = compare(ft, sc)
    if verdict > 0:
        first = (f"fine-tuning beats training from scratch by {diff:.3f} in the mean {over}, more than the spread: "
                 "every fine-tuning run is above every run from scratch")
    elif verdict < 0:
        first = (f"training from scratch beats fine-tuning by {-diff:.3f} in the mean {over}, more than the spread: "
                 "every run from scratch is above every fine-tuning run")
    else:
        why = "their ranges overlap" if n > 1 else "one run measures no spread"
        first = (f"fine-tuning and training from scratch differ by {diff:+.3f} in the mean {over}; {why}, so these "
                 "runs do not tell them apart")
    lines = [f"At equal iterations, {first}."]
    ratios = [r["cached_features"]["seconds"] / r["feature_extractor"]["seconds"] for r in runs.values()
              if r["feature_extractor"]["seconds"]]
    if ratios:
        share = f"{min(ratios):.2f}" if max(ratios) - min(ratios) < 0.005 else f"{min(ratios):.2f}-{max(ratios):.2f}"
        cf, fe = spread(runs, "cached_features", "accuracy"), spread(runs, "feature_extractor", "accuracy")
        accuracy = {1: "are more accurate than it in every run", -1: "are less accurate than it in every run",
                    0: "reach an accuracy these runs do not tell apart from its"}[compare(cf, fe)]
        lines.append(f"Cached features take {share} of the feature extractor's time ({over}) and {accuracy}.")
    return lines


def write_results(runs, heldout_accuracy, info, repo) -> Path:
    """results/demo/q2/transfer_results.json: the measured numbers `make demo` reports (its demo_results.md):
    per seed each mode's accuracy, seconds and iterations; "modes" holds the first seed's."""
    card = read_json(Path(repo) / CARD, expect={"val_accuracy": NUMBER},
                     fix="run `make demo` again: its pretraining stage writes the model card anew") or {}
    if not card:
        raise FileNotFoundError(f"{Path(repo) / CARD} not found: run `make demo` again; its pretraining stage "
                                "writes it")
    per_seed = {str(seed): {m: {k: r[k] for k in ("accuracy", "seconds", "iterations")} for m, r in results.items()}
                for seed, results in runs.items()}
    data = {"modes": next(iter(per_seed.values())), "seeds": per_seed,
            "heldout_accuracy": round(heldout_accuracy, 4), "heldout_images": info["heldout"],
            "pretrained_accuracy": card["val_accuracy"], "target_train": info["target_train"],
            "target_val": info["target_val"]}
    out = Path(repo) / RESULTS / "transfer_results.json"
    write_text(out, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return out


def heldout_submission(task, weights, repo, gpu, progress):
    """The prediction CLI's code path on the held-out images: submission.csv, scored against the answers."""
    mean = mean_bgr(None, task.mean_value)
    clf = predict.load_classifier(repo / task.path("finetune", "deploy.prototxt"), weights, new_size=task.new_size,
                                  crop=task.crop, mean=mean, gpu=gpu)
    files, _ = predict.read_list(repo / DATA / "heldout.txt", repo / task.image_root)
    # the net's outputs 0-4 are the target classes in order: the submission names Fashion-MNIST's classes 5-9
    labels = np.asarray(TARGET_CLASSES)[predict.predict(clf, files, progress=progress).argmax(axis=1)]
    out = repo / RESULTS / "heldout_submission.csv"
    predict.write_submission(out, [f.stem for f in files], labels.tolist())
    answers = dict(line.split(",") for line in (repo / DATA / "heldout_answers.csv").read_text().split()[1:])
    score = float(np.mean([answers[f.stem] == str(lab) for f, lab in zip(files, labels, strict=True)]))
    write_text(repo / RESULTS / "heldout_score.txt", f"held-out accuracy {score:.4f} on {len(files)} images\n")
    return score


def write_comparison(runs, info, sizes, out):
    seeds = list(runs)
    lines = ["# Demo: transfer learning with Q2's machinery on Fashion-MNIST", "",
             f"Pretrained on classes 0-4 ({info['pretrain_train']} images, {sizes.pretrain_iter} iterations); "
             f"target classes 5-9 with {info['target_train']} labelled images ({sizes.target_per_class} per class), "
             f"validation {info['target_val']} images; every mode {sizes.transfer_iter} iterations, once per seed "
             f"(the solvers' random_seed: {', '.join(map(str, seeds))}).", "",
             "| mode | starts from | validation accuracy: mean (range) | per seed | wall time (s): mean (range) |",
             "|---|---|---|---|---|"]
    for m in ORDER:
        acc, sec = spread(runs, m, "accuracy"), spread(runs, m, "seconds")
        start = "random fillers" if m == "scratch" else "pretrained 0-4 model"
        per_seed = ", ".join(f"{runs[s][m]['accuracy']:.3f}" for s in seeds)
        lines.append(f"| {m} | {start} | {acc['mean']:.3f} ({acc['min']:.3f}-{acc['max']:.3f}) | {per_seed} | "
                     f"{sec['mean']:.0f} ({sec['min']:.0f}-{sec['max']:.0f}) |")
    lines += ["", *conclusions(runs), "", f"Plots (seed {seeds[0]}): `transfer_accuracy_vs_iter.png`, "
              "`transfer_loss_vs_iter.png`; held-out predictions: `heldout_submission.csv` (score in "
              "`heldout_score.txt`)."]
    write_text(out / "transfer_summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def default_tasks(sizes=Sizes()):
    """(task, modes) of the demo at its default sizes: what models/demo/ holds."""
    _, info = plan(sizes)
    pretrain = pretrain_task(info, sizes)
    weights = f"{pretrain.results_dir}/finetune/snap_iter_{sizes.pretrain_iter}.caffemodel"
    return [(pretrain, ["finetune"]), (transfer_task(info, weights, sizes), list(MODES)),
            (transfer_task(info, "", sizes, name="fashion-scratch", results="scratch", base_lr=0.01), ["finetune"])]


def run(sizes=Sizes(), repo=paths.REPO, gpu=None, progress=True, seeds=SEEDS) -> dict:
    """Prepare, pretrain, transfer with every seed; returns the first seed's {mode: metrics}."""
    t0 = time.time()
    info = prepare(sizes, repo)
    weights = pretrain(info, sizes, repo, gpu, progress)
    runs = transfer(info, weights, sizes, repo, gpu, progress, seeds)
    print(f"[demo q2] done in {time.time() - t0:.0f} s; results in {Path(repo) / RESULTS}")
    return runs[seeds[0]]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m q2_wikiart_finetune.transfer_demo",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default=None, help="GPU id (needs `make setup CAFFE_GPU=1`); default CPU")
    ap.add_argument("--write", action="store_true", help="only (re)generate the committed models/demo/ prototxts")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                    help=f"the transfer's random seeds (default {' '.join(map(str, SEEDS))}; the first one's runs give "
                         "the figures and the held-out submission)")
    a = ap.parse_args(argv)
    if a.write:
        for task, modes in default_tasks():
            for mode in modes:
                print(write_mode(task, mode, paths.REPO))
        return
    with exit_on(DatasetError, ValueError, FileNotFoundError):
        caffe_runner.gpu_args(a.gpu)  # a GPU asked of a CPU-only build: say so before any work
        run(gpu=a.gpu or None, seeds=tuple(dict.fromkeys(a.seeds)))


if __name__ == "__main__":
    main()
