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
from q2_wikiart_finetune.task import write as write_prototxts
from tools import caffe_runner, paths
from tools.cli import exit_on
from tools.datasets import FASHION_MNIST_CLASSES, DatasetError, load_fashion_mnist, stratified_subset
from tools.fileio import atomic_path, write_if_changed, write_text
from tools.parse_log import parse_log
from tools.plot_log import plot_runs
from tools.transform import mean_bgr

SOURCE_CLASSES = [0, 1, 2, 3, 4]
TARGET_CLASSES = [5, 6, 7, 8, 9]
DATA = "data/demo/fashion"
RESULTS = "results/demo/q2"
MINI = dict(width=0.25, new_size=112, crop=99, batch=50, val_batch=50)


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


def prepare(sizes=Sizes(), repo=paths.REPO, seed=0) -> dict:
    """Fashion-MNIST as image folders and list files, the way WikiArt is laid out; skipped when done."""
    root = Path(repo) / DATA
    marker = root / "prepared.json"
    want = dataclasses.asdict(sizes) | {"seed": seed}
    if marker.exists() and json.loads(marker.read_text()).get("sizes") == want:
        return json.loads(marker.read_text())
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


def transfer_task(info, pretrained, sizes=Sizes(), name="fashion-transfer", results="transfer", **changes):
    return dataclasses.replace(Task(
        name=name, data_root=f"{DATA}/target", image_root=f"{DATA}/images/", num_classes=5,
        last_layer="fc8_fashion", weights=pretrained, models_dir=f"models/demo/{results}",
        results_dir=f"{RESULTS}/{results}", mean_value=tuple(info["mean_value"]), train_count=info["target_train"],
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
    write_if_changed(repo / "results/demo/pretrained/model.json", json.dumps(card, indent=1) + "\n")
    return weights


def transfer(info, weights, sizes=Sizes(), repo=paths.REPO, gpu=None, progress=True) -> dict:
    """Fine-tune / feature-extract / cached features from the pretrained net, and scratch, at equal iterations."""
    repo = Path(repo)
    rel = str(weights.relative_to(repo)) if weights.is_relative_to(repo) else str(weights)
    task = transfer_task(info, rel, sizes)
    results = experiment.run(task, MODES, repo=repo, gpu=gpu, progress=progress, default_task=task,
                             summary_title="Demo transfer: Fashion-MNIST 5-9 from the 0-4 model")
    # the same net and iterations without the pretrained weights (at the pretraining learning rate)
    scratch = transfer_task(info, "", sizes, name="fashion-scratch", results="scratch", base_lr=0.01)
    from_scratch = experiment.run(scratch, ["finetune"], pretrained="", repo=repo, gpu=gpu, progress=progress,
                                  default_task=scratch, summary_title="Demo: the same net from scratch")
    results["scratch"] = from_scratch["finetune"]
    logs = {m: parse_log(repo / task.results_dir / m / "train.log") for m in MODES}
    logs["scratch"] = parse_log(repo / scratch.results_dir / "finetune" / "train.log")
    out = repo / RESULTS
    plot_runs(logs, "accuracy", out / "transfer_accuracy_vs_iter.png", test_nets=["val"], train=False,
              title=f"Fashion-MNIST 5-9 from {info['target_train']} images: validation accuracy")
    plot_runs(logs, "loss", out / "transfer_loss_vs_iter.png", test_nets=["val"],
              title="Fashion-MNIST 5-9: training loss (faint) and validation loss")
    score = heldout_submission(task, Path(results[max(MODES, key=lambda m: results[m]["accuracy"])]["weights"]),
                               repo, gpu, progress)
    write_comparison(results, info, sizes, out)
    write_results(results, score, info, repo)
    return results


def write_results(results, heldout_accuracy, info, repo) -> Path:
    """results/demo/q2/transfer_results.json: the measured numbers `make demo` reports (docs/demo_results.md)."""
    card = json.loads((Path(repo) / "results/demo/pretrained/model.json").read_text())
    data = {"modes": {m: {k: r[k] for k in ("accuracy", "seconds", "iterations")} for m, r in results.items()},
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


def write_comparison(results, info, sizes, out):
    order = ["cached_features", "feature_extractor", "finetune", "scratch"]
    lines = ["# Demo: transfer learning with Q2's machinery on Fashion-MNIST", "",
             f"Pretrained on classes 0-4 ({info['pretrain_train']} images, {sizes.pretrain_iter} iterations); "
             f"target classes 5-9 with {info['target_train']} labelled images ({sizes.target_per_class} per class), "
             f"validation {info['target_val']} images; every mode {sizes.transfer_iter} iterations.", "",
             "| mode | starts from | validation accuracy | wall time (s) |", "|---|---|---|---|"]
    for m in order:
        r = results[m]
        start = "random fillers" if m == "scratch" else "pretrained 0-4 model"
        lines.append(f"| {m} | {start} | {r['accuracy']:.3f} | {r['seconds']:.0f} |")
    gain = results["finetune"]["accuracy"] - results["scratch"]["accuracy"]
    lines += ["", f"Fine-tuning beats training from scratch by {gain:+.3f} accuracy at equal iterations."
              if gain > 0 else f"Fine-tuning did not beat training from scratch here ({gain:+.3f}).",
              "", "Plots: `transfer_accuracy_vs_iter.png`, `transfer_loss_vs_iter.png`; held-out predictions: "
              "`heldout_submission.csv` (score in `heldout_score.txt`)."]
    write_text(out / "transfer_summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def default_tasks(sizes=Sizes()):
    """(task, modes) of the demo at its default sizes: what models/demo/ holds."""
    _, info = plan(sizes)
    pretrain = pretrain_task(info, sizes)
    weights = f"{pretrain.results_dir}/finetune/snap_iter_{sizes.pretrain_iter}.caffemodel"
    return [(pretrain, ["finetune"]), (transfer_task(info, weights, sizes), list(MODES)),
            (transfer_task(info, "", sizes, name="fashion-scratch", results="scratch", base_lr=0.01), ["finetune"])]


def run(sizes=Sizes(), repo=paths.REPO, gpu=None, progress=True) -> dict:
    t0 = time.time()
    info = prepare(sizes, repo)
    weights = pretrain(info, sizes, repo, gpu, progress)
    results = transfer(info, weights, sizes, repo, gpu, progress)
    print(f"[demo q2] done in {time.time() - t0:.0f} s; results in {Path(repo) / RESULTS}")
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m q2_wikiart_finetune.transfer_demo",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default=None, help="GPU id (needs `make setup CAFFE_GPU=1`); default CPU")
    ap.add_argument("--write", action="store_true", help="only (re)generate the committed models/demo/ prototxts")
    a = ap.parse_args(argv)
    if a.write:
        for task, modes in default_tasks():
            for mode in modes:
                print(write_prototxts(task, mode, paths.REPO))
        return
    with exit_on(DatasetError, ValueError, FileNotFoundError):
        caffe_runner.gpu_args(a.gpu)  # a GPU asked of a CPU-only build: say so before any work
        run(gpu=a.gpu or None)


if __name__ == "__main__":
    main()
