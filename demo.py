"""`make demo`: the whole toolkit offline, on Fashion-MNIST (real images from a Debian package).

    .venv/bin/python demo.py        # results/demo/index.md links every figure and table
    .venv/bin/python demo.py --results-only   # rewrite docs/demo_results.md from results/ (trains nothing)
    .venv/bin/python demo.py --readme         # copy docs/demo_results.md into README.md's marked section

1. Q1 on Fashion-MNIST: every variant, the validation-loss-with-and-without-dropout plot, accuracy, summary.
2. Q2's machinery offline: pretrain a reduced AlexNet on classes 0-4, transfer it to a few labelled
   images of classes 5-9 (fine-tune, feature extractor, cached features, against scratch).
3. Q3's three notebooks on that pretrained model.

Everything resumes or is reused: a second run retrains nothing and re-executes a notebook only when
it or the model changed. The measured numbers go to docs/demo_results.md (committed), which README.md
shows between the markers below; tests/test_readme.py fails when the two disagree.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

# pycaffe logs every layer it sets up at INFO level; glog reads this once, when pycaffe loads, so an
# entry point sets it before anything imports caffe. The `caffe` binary's runner sets its own level.
os.environ.setdefault("GLOG_minloglevel", "2")

from tools import caffe_runner, paths  # noqa: E402
from tools.cli import exit_on  # noqa: E402
from tools.fileio import write_if_changed, write_text  # noqa: E402

OUT = "results/demo"
RESULTS_FILE = "docs/demo_results.md"
README_START, README_END = "<!-- demo:results:start -->", "<!-- demo:results:end -->"


def stage_q1(repo, gpu):
    from q1_dropout_augment import experiment

    return experiment.run("fashion-mnist", gpu=gpu, repo=repo)


def stage_q2(repo, gpu):
    from q2_wikiart_finetune import transfer_demo

    return transfer_demo.run(repo=repo, gpu=gpu)


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
        ("demo/q3/fooling-evaluation.md", "table: fooling success rate, iterations and perturbation sizes over "
                                          "images x targets (`fooling-evaluation.csv`: one row per attempt)"),
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
    listed = {rel for _, items in FIGURES for rel, _ in items}
    q3 = sorted(p for p in (repo / OUT / "q3").glob("*") if p.is_file() and p.suffix in (".png", ".csv", ".md", ".json")
                and f"demo/q3/{p.name}" not in listed)
    if q3:
        lines += ["", "Other figures and tables the Q3 notebooks saved:", ""]
        lines += [f"- [`demo/q3/{p.name}`](q3/{p.name})" for p in q3]
    write_text(out, "\n".join(lines) + "\n")
    return out


Q1_VARIANTS = ("baseline", "dropout", "augment", "dropout_augment", "dropout_augment_rta")
Q2_ROWS = [("cached_features", "the pretrained model"), ("feature_extractor", "the pretrained model"),
           ("finetune", "the pretrained model"), ("scratch", "random fillers (same net, same iterations)")]


def q1_results(repo) -> dict | None:
    """Q1's numbers from the default Fashion-MNIST run: per variant the final accuracies (validation on the
    whole set, val_full.json), loss and wall time; the baseline's validation-loss curve. None if not run."""
    from q1_dropout_augment.experiment import final
    from q1_dropout_augment.nets import DATASETS
    from tools.parse_log import parse_log

    out = repo / "results/q1/fashion-mnist"
    if not all((out / v / "val_full.json").exists() for v in Q1_VARIANTS):
        return None
    rows = []
    for v in Q1_VARIANTS:
        log, full = parse_log(out / v / "train.log"), json.loads((out / v / "val_full.json").read_text())
        train = final(log.test(1), "accuracy")
        seconds = max(r["Seconds"] for r in [*log.train, *log.test(0)])
        rows.append({"variant": v, "train": train, "val": full["accuracy"], "gap": train - full["accuracy"],
                     "val_loss": full["loss"], "seconds": seconds})
    curve = [(r["NumIters"], r["loss"]) for r in parse_log(out / "baseline/train.log").test(0)]
    spec = DATASETS["fashion-mnist"]
    return {"rows": rows, "curve": curve, "spec": spec}


def render_results(repo, timings) -> str | None:
    """docs/demo_results.md: what `make demo` measured, rounded and formatted the same way every time."""
    q1 = q1_results(repo)
    q2_file = repo / OUT / "q2/transfer_results.json"
    if q1 is None or not q2_file.exists():
        return None
    q2 = json.loads(q2_file.read_text())
    spec = q1["spec"]
    lines = ["# Measured by `make demo`", "",
             f"Written by `demo.py` from its outputs under `results/` ({os.cpu_count()} cores). README.md shows this "
             "file between its `demo:results` markers (`.venv/bin/python demo.py --readme`).", "",
             f"## Q1 on Fashion-MNIST: {spec.max_iter:,} iterations of batch 50 per variant", "",
             "| variant | training accuracy | validation accuracy | gap | final validation loss | wall time (s) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['train']:.3f} | {r['val']:.3f} | {r['gap']:+.3f} | {r['val_loss']:.3f} | "
              f"{r['seconds']:.0f} |" for r in q1["rows"]]
    base = q1["rows"][0]
    best = max(q1["rows"], key=lambda r: r["val"])
    low_iter, low = min(q1["curve"], key=lambda p: p[1])
    last_iter, last = q1["curve"][-1]
    lines += ["", f"Validation accuracy and loss: the final weights on all {spec.val_count:,} test images. The "
              f"validation curve ({len(q1['curve'])} points, every {spec.test_interval} iterations, on a fixed "
              f"{spec.val_sample_count:,}-image sample of them): the baseline's validation loss is lowest at "
              f"iteration {low_iter:,} ({low:.3f}) and {'rises' if last > low else 'ends'} to {last:.3f} at "
              f"iteration {last_iter:,}; its training accuracy reaches {base['train']:.3f}. Best validation "
              f"accuracy: {best['variant']}, {best['val']:.3f} ({best['val'] - base['val']:+.3f} against the "
              "baseline).", "",
              f"## Q2's machinery offline: Fashion-MNIST 5-9 from the 0-4 model, {q2['target_train']} labelled images",
              "", "| mode | starts from | validation accuracy (classes 5-9) | wall time (s) |", "|---|---|---|---|"]
    modes = q2["modes"]
    lines += [f"| {m} | {start} | {modes[m]['accuracy']:.3f} | {modes[m]['seconds']:.0f} |" for m, start in Q2_ROWS]
    gain = modes["finetune"]["accuracy"] - modes["scratch"]["accuracy"]
    share = modes["cached_features"]["seconds"] / modes["feature_extractor"]["seconds"]
    lines += ["", f"At equal iterations ({modes['finetune']['iterations']}), fine-tuning "
              f"{'beats' if gain > 0 else 'does not beat'} training from scratch ({gain:+.3f}); cached features take "
              f"{share:.2f} of the feature extractor's time. The held-out submission of the best mode scores "
              f"{q2['heldout_accuracy']:.3f} on {q2['heldout_images']} images; the pretrained model reaches "
              f"{q2['pretrained_accuracy']:.3f} on classes 0-4.", "",
              "## Stage wall times", "", "| stage | first run, doing the work (s) |", "|---|---|"]
    lines += [f"| {name} | {t['first']:.0f} |" for name, t in timings.items()]
    return "\n".join(lines) + "\n"


def readme_section(results_text: str) -> str:
    """The README's generated section: docs/demo_results.md without its title, headings one level down."""
    body = results_text.split("\n", 1)[1].lstrip("\n")
    body = "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())
    return (f"{README_START}\n<!-- generated from {RESULTS_FILE} by `.venv/bin/python demo.py --readme`: "
            f"edit neither by hand -->\n{body}\n{README_END}")


def with_readme_section(readme: str, results_text: str) -> str:
    """`readme` with the text between its markers replaced by readme_section(results_text)."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {README_START} ... {README_END} section")
    return readme[:start] + readme_section(results_text) + readme[end + len(README_END):]


def write_results(repo, timings) -> Path | None:
    text = render_results(repo, timings)
    if text is None:
        print("[demo] Q1 or Q2 has not run yet: docs/demo_results.md left as it is")
        return None
    write_if_changed(repo / RESULTS_FILE, text)
    return repo / RESULTS_FILE


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python demo.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default=None, help="GPU id (needs `make setup CAFFE_GPU=1`); default CPU")
    ap.add_argument("--only", nargs="+", choices=["q1", "q2", "q3"], help="run only these stages")
    ap.add_argument("--results-only", action="store_true",
                    help=f"run nothing: rewrite {RESULTS_FILE} and the index from what results/ holds")
    ap.add_argument("--readme", action="store_true",
                    help=f"run nothing: copy {RESULTS_FILE} into README.md between its demo:results markers")
    a = ap.parse_args(argv)
    repo = paths.REPO
    timings_file = repo / OUT / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    if a.readme:
        readme = repo / "README.md"
        with exit_on(ValueError):
            changed = write_if_changed(readme, with_readme_section(readme.read_text(),
                                                                   (repo / RESULTS_FILE).read_text()))
        print(f"[demo] {readme}: {'updated' if changed else 'already up to date'}")
        return 0
    if a.results_only:
        print(f"[demo] {write_results(repo, timings)}; {write_index(repo, timings)}")
        return 0
    stages = [("Q1 (all variants)", "q1", stage_q1), ("Q2 offline (pretrain + transfer)", "q2", stage_q2),
              ("Q3 notebooks", "q3", stage_q3)]
    from q3_visualize_break.run_notebooks import NotebookError

    with exit_on(NotebookError, ValueError):
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
    index = write_index(repo, timings)
    results = write_results(repo, timings)
    print(f"[demo] done: {index}" + (f"; measured numbers in {results}" if results else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
