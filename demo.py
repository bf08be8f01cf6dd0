"""`make demo`: the whole toolkit offline, on Fashion-MNIST (real images from a Debian package).

    python demo.py        # results/demo/index.md links every figure and table

1. Q1 on Fashion-MNIST: every variant, the validation-loss-with-and-without-dropout plot, accuracy, summary.
2. Q2's machinery offline: pretrain a reduced AlexNet on classes 0-4, transfer it to a few labelled
   images of classes 5-9 (fine-tune, feature extractor, cached features, against scratch).
3. Q3's three notebooks on that pretrained model.

Everything resumes or is reused: a second run retrains nothing and re-executes a notebook only when
it or the model changed.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import tools  # noqa: F401  (quiets pycaffe's set-up logging)
from tools import caffe_runner, paths
from tools.fileio import write_text

OUT = "results/demo"


def stage_q1(repo, gpu):
    from q1_dropout_augment import experiment

    return experiment.run("fashion-mnist", gpu=gpu, repo=repo)


def stage_q2(repo, gpu):
    from q2_wikiart_finetune import offline

    return offline.run(repo=repo, gpu=gpu)


def stage_q3(repo, gpu):
    from q3_visualize_break import run_notebooks

    out = repo / OUT / "q3"
    card = repo / OUT / "pretrained/model.json"
    newest_input = max(p.stat().st_mtime for p in [card, *(run_notebooks.NOTEBOOK_DIR / n for n in
                                                           run_notebooks.NOTEBOOKS)])
    stale = [n for n in run_notebooks.NOTEBOOKS
             if not (out / n).exists() or (out / n).stat().st_mtime < newest_input]
    if not stale:
        print("[demo] Q3 notebooks are up to date with the model")
        return out
    run_notebooks.run_notebooks(out, str(card), gpu=gpu, only=[Path(n).stem for n in stale])
    return out


# (path under results/, what it shows) for the index; missing files are listed as missing
FIGURES = [
    ("Q1: dropout and data augmentation (Fashion-MNIST, 100 images per class)", [
        ("q1/fashion-mnist/val_loss_vs_iter.png", "validation loss against iterations with and without dropout; "
                                                  "training loss faint (the deliverable)"),
        ("q1/fashion-mnist/accuracy_vs_iter.png", "training-subset (dashed) and validation (solid) accuracy of "
                                                  "every variant"),
        ("q1/fashion-mnist/val_loss_all.png", "validation loss of all five variants"),
        ("q1/fashion-mnist/summary.md", "table: training and validation accuracy, gap and wall time per variant"),
        ("q1/fashion-mnist/nets/dropout_augment.png", "the dropout + augmentation net as Caffe draws it"),
    ]),
    ("Q2's machinery offline: transfer learning on Fashion-MNIST", [
        ("demo/q2/transfer_accuracy_vs_iter.png", "validation accuracy on classes 5-9 of fine-tuning, feature "
                                                  "extractor, cached features and training from scratch"),
        ("demo/q2/transfer_loss_vs_iter.png", "training (faint) and validation loss of the same runs"),
        ("demo/q2/transfer_summary.md", "table: accuracy and wall time of each mode at equal iterations"),
        ("demo/q2/pretrain/summary.md", "the pretrained reduced AlexNet on classes 0-4 (the ImageNet stand-in)"),
        ("demo/q2/transfer/finetune/val_confusion.png", "confusion matrix of the fine-tuned net on classes 5-9"),
        ("demo/q2/heldout_submission.csv", "Kaggle-format predictions for the held-out images"),
        ("demo/q2/heldout_score.txt", "the held-out submission scored against the kept-back answers"),
    ]),
    ("Q3: visualising and breaking the pretrained demo model", [
        ("demo/q3/class-model-visualizations.ipynb", "executed notebook: class model visualisations"),
        ("demo/q3/saliency-maps.ipynb", "executed notebook: image-specific saliency maps"),
        ("demo/q3/breaking-convnets.ipynb", "executed notebook: fooling images and their success rate"),
    ]),
]


def write_index(repo, timings) -> Path:
    results = repo / "results"
    out = repo / OUT / "index.md"
    lines = ["# `make demo`: the toolkit offline on Fashion-MNIST", "",
             "Fashion-MNIST (Debian package `dataset-fashion-mnist`) stands in for CIFAR-10, WikiArt and "
             "ImageNet, which need the internet. Paths are relative to `results/`.", "",
             "| stage | first run, doing the work (s) | latest run (s) |", "|---|---|---|"]
    lines += [f"| {name} | {t['first']:.0f} | {t['latest']:.0f} |" for name, t in timings.items()]
    for title, items in FIGURES:
        lines += ["", f"## {title}", ""]
        for rel, what in items:
            present = (results / rel).exists()
            link = f"[`{rel}`](../{rel})" if present else f"`{rel}` (missing)"
            lines.append(f"- {link}: {what}")
    q3 = sorted((repo / OUT / "q3").glob("*.png"))
    if q3:
        lines += ["", "Figures the Q3 notebooks saved:", ""]
        lines += [f"- [`demo/q3/{p.name}`](q3/{p.name})" for p in q3]
    write_text(out, "\n".join(lines) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python demo.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default=None, help="GPU id (needs `make setup CAFFE_GPU=1`); default CPU")
    ap.add_argument("--only", nargs="+", choices=["q1", "q2", "q3"], help="run only these stages")
    a = ap.parse_args(argv)
    repo = paths.REPO
    timings_file = repo / OUT / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    stages = [("Q1 (all variants)", "q1", stage_q1), ("Q2 offline (pretrain + transfer)", "q2", stage_q2),
              ("Q3 notebooks", "q3", stage_q3)]
    from q3_visualize_break.run_notebooks import NotebookError

    try:
        caffe_runner.gpu_args(a.gpu)  # a GPU asked of a CPU-only build: say so before any work
        for title, key, stage in stages:
            if a.only and key not in a.only:
                continue
            print(f"[demo] {title}")
            start = time.time()
            stage(repo, a.gpu or None)
            seconds = time.time() - start
            timings.setdefault(title, {"first": seconds})["latest"] = seconds
            write_text(timings_file, json.dumps(timings, indent=1) + "\n")
    except (caffe_runner.CaffeError, paths.SetupError, NotebookError, ValueError, FileNotFoundError) as e:
        print(f"[demo] FAILED: {e}", file=sys.stderr)
        return 1
    except caffe_runner.TrainingInterrupted:
        print("[demo] interrupted: Caffe saved a snapshot; run `make demo` again to resume", file=sys.stderr)
        return 130
    index = write_index(repo, timings)
    print(f"[demo] done: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
