"""`make demo`: the whole toolkit offline, on Fashion-MNIST (real images from a Debian package).

    .venv/bin/python demo.py                  # everything under results/; ends by printing results/demo/index.md
    .venv/bin/python demo.py --results-only   # rewrite results/demo/index.md and demo_results.md (trains nothing)
    .venv/bin/python demo.py --readme         # `make readme`: publish the run's numbers into docs/ and README.md

1. Q1 on Fashion-MNIST: every variant, the validation-loss-with-and-without-dropout plot, accuracy, summary.
2. Q2's machinery offline: pretrain a reduced AlexNet on classes 0-4, transfer it to a few labelled
   images of classes 5-9 (fine-tune, feature extractor, cached features, against scratch), with three
   seeds, so that the spread from one run to the next is measured rather than guessed.
3. Q3's three notebooks on that pretrained model.

Everything resumes or is reused: a second run retrains nothing and re-executes a notebook only when
it or the model changed. A run writes only under results/: its measured numbers go to
results/demo/demo_results.md and its times to results/demo/timings.json. The committed copies, which
README.md shows, change only through `make readme` (demo.py --readme): docs/demo_results.md, the
figure docs/demo_val_loss_vs_iter.png (with its CSV) and docs/measured.json (the times of `make demo`
and `make test`), and README.md's generated sections between their markers. tests/test_readme.py fails
when a README section and the file it is generated from disagree.
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

from tools import caffe_runner, paths, runinfo  # noqa: E402
from tools.cli import exit_on  # noqa: E402
from tools.fileio import NUMBER, read_json, write_bytes, write_if_changed, write_text  # noqa: E402
from tools.readme_sections import replace_between  # noqa: E402

# What a run writes (results/ is ignored by git)
OUT = "results/demo"
RUN_RESULTS = f"{OUT}/demo_results.md"
TIMINGS = f"{OUT}/timings.json"
FIGURE_RUN = "results/q1/fashion-mnist/val_loss_vs_iter"  # .png and .csv
TEST_RECORD = {"seconds": NUMBER, "machine": dict, "passed": int}  # what tests/conftest.py writes, read by times_rows
TEST_RECORDS = {"make test": "results/tests/make-test.json", "make test-fast": "results/tests/make-test-fast.json"}
SELFTEST_RUN, SELFTEST_FILE = "results/caffe-selftest.md", "docs/caffe-selftest.md"  # `make caffe-selftest`'s report
# What `make readme` publishes from it (committed)
RESULTS_FILE = "docs/demo_results.md"
FIGURE_FILE = "docs/demo_val_loss_vs_iter"  # .png and .csv
MEASURED_FILE = "docs/measured.json"
README_START, README_END = "<!-- demo:results:start -->", "<!-- demo:results:end -->"
TIMES_START, TIMES_END = "<!-- measured:times:start -->", "<!-- measured:times:end -->"


def stage_q1(repo, gpu):
    from q1_dropout_augment import experiment

    return experiment.run("fashion-mnist", gpu=gpu, repo=repo)


def stage_q2(repo, gpu):
    from q2_wikiart_finetune import transfer_demo

    return transfer_demo.run(repo=repo, gpu=gpu)


Q3_THREADS = 1  # Caffe's threads in the Q3 notebooks' kernels (see stage_q3)


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
    # One Caffe thread: the demo model's input-gradient steps (batch 1, 99x99, width 0.25) are too small to share
    # between threads; with two, any other process taking a core leaves one thread waiting at every layer's barrier,
    # and class-model-visualizations took 64 s instead of 4 s (a machine at load 4.4, measured side by side)
    run_notebooks.run_notebooks(out, str(card), gpu=gpu, only=[Path(n).stem for n in stale], threads=Q3_THREADS)
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


def load_timings(path) -> dict:
    """results/demo/timings.json: {"stages": {title: {"first": s, "latest": s}}, "runs": {"first": run,
    "latest": run}}, a run being {"seconds", "machine", "loadavg_end", "stages": {title: s}} of one whole
    `make demo`. The file of an older demo (only the stages, at the top level) is read as such."""
    data = read_json(path, log=say, expect=_timings_problem, again="the stage times start again from this run") or {}
    if data and "stages" not in data:
        data = {"stages": data}
    return {"stages": data.get("stages", {}), "runs": data.get("runs", {})}


def say(line: str) -> None:
    print(f"[demo] {line}")


def _timings_problem(data: dict) -> str | None:
    """What is wrong with timings.json's fields (see load_timings), or None."""
    stages = data.get("stages", {} if "runs" in data else data)
    if not isinstance(stages, dict):
        return "'stages' is not an object"
    for name, t in stages.items():
        if not (isinstance(t, dict) and isinstance(t.get("first"), NUMBER)
                and isinstance(t.get("latest", 0), NUMBER)):
            return f"stage {json.dumps(name)} has no number of seconds 'first'"
    runs = data.get("runs", {})
    if not isinstance(runs, dict) or not all(isinstance(r, dict) and isinstance(r.get("seconds"), NUMBER)
                                             and isinstance(r.get("machine"), dict) for r in runs.values()):
        return "'runs' is not an object of runs with their seconds and machine"
    return None


def stage_rows(timings) -> list[str]:
    return [f"| {name} | {t['first']:.0f} | {t.get('latest', t['first']):.0f} |"
            for name, t in timings["stages"].items()]


def write_index(repo, timings) -> Path:
    results = repo / "results"
    out = repo / OUT / "index.md"
    lines = ["# `make demo`: the toolkit offline on Fashion-MNIST", "",
             "Fashion-MNIST (Debian package `dataset-fashion-mnist`) stands in for CIFAR-10, WikiArt and "
             "ImageNet, which need the internet. Paths are relative to `results/`; the measured numbers are in "
             "[`demo/demo_results.md`](demo_results.md).", "",
             "| stage | first run, doing the work (s) | latest run (s) |", "|---|---|---|", *stage_rows(timings)]
    run = timings["runs"].get("latest")
    if run:
        lines += ["", f"Latest whole run: {runinfo.duration(run['seconds'])} ({runinfo.describe(run['machine'])})."]
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


# What results/demo/q2/transfer_results.json always holds (q2_wikiart_finetune.transfer_demo.write_results)
Q2_RESULTS = {"modes": dict, "heldout_accuracy": NUMBER, "heldout_images": int, "pretrained_accuracy": NUMBER,
              "target_train": int}
Q1_VARIANTS = ("baseline", "dropout", "augment", "dropout_augment", "dropout_augment_rta")
Q2_ROWS = [("cached_features", "the pretrained model"), ("feature_extractor", "the pretrained model"),
           ("finetune", "the pretrained model"), ("scratch", "random fillers (same net, same iterations)")]


def q1_results(repo) -> dict | None:
    """Q1's numbers from the default Fashion-MNIST run: per variant the final accuracies (validation on the
    whole set, val_full.json), loss and wall time; the baseline's validation-loss curve. None if not run."""
    from q1_dropout_augment.experiment import final, train_seconds
    from q1_dropout_augment.nets import DATASETS
    from tools.parse_log import parse_log

    out = repo / "results/q1/fashion-mnist"
    if not all((out / v / "val_full.json").exists() for v in Q1_VARIANTS):
        return None
    # what the summary takes from each (the Q1 stage itself checks them against the weights)
    fulls = {v: read_json(out / v / "val_full.json", log=say, expect={"accuracy": NUMBER, "loss": NUMBER},
                          again="the Q1 stage (`make demo`, or demo.py --only q1) evaluates the final weights again")
             for v in Q1_VARIANTS}
    if any(full is None for full in fulls.values()):
        return None
    rows = []
    for v in Q1_VARIANTS:
        log, full = parse_log(out / v / "train.log"), fulls[v]
        train = final(log.test(1), "accuracy")
        rows.append({"variant": v, "train": train, "val": full["accuracy"], "gap": train - full["accuracy"],
                     "val_loss": full["loss"], "seconds": train_seconds(log)})
    curve = [(r["NumIters"], r["loss"]) for r in parse_log(out / "baseline/train.log").test(0)]
    spec = DATASETS["fashion-mnist"]
    return {"rows": rows, "curve": curve, "spec": spec}


def q2_seeds(q2: dict) -> dict:
    """{seed: {mode: {accuracy, seconds, iterations}}} of transfer_results.json (one seed in an older file)."""
    return q2.get("seeds") or {"1": q2["modes"]}


def render_results(repo, timings) -> str | None:
    """demo_results.md: what `make demo` measured, rounded and formatted the same way every time."""
    from q1_dropout_augment.experiment import seconds_text
    from q2_wikiart_finetune.transfer_demo import conclusions, spread

    q1 = q1_results(repo)
    q2_file = repo / OUT / "q2/transfer_results.json"
    if q1 is None or not q2_file.exists():
        return None
    q2 = read_json(q2_file, log=say, expect=Q2_RESULTS, again="the Q2 stage (`make demo`, or demo.py --only q2) "
                   "makes it again")
    if q2 is None:
        return None
    spec = q1["spec"]
    run = timings["runs"].get("first") or timings["runs"].get("latest")
    where = f" ({runinfo.describe(run['machine'])})" if run else f" ({os.cpu_count()} cores)"
    lines = ["# Measured by `make demo`", "",
             f"Written by `demo.py` from one run's outputs under `results/`{where}; `make readme` publishes it "
             "here and into README.md.", "",
             f"## Q1 on Fashion-MNIST: {spec.max_iter:,} iterations of batch 50 per variant", "",
             "| variant | training accuracy | validation accuracy | gap | final validation loss | wall time (s) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['train']:.3f} | {r['val']:.3f} | {r['gap']:+.3f} | {r['val_loss']:.3f} | "
              f"{seconds_text(r['seconds'])} |" for r in q1["rows"]]
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
              "baseline; one run each, seed 0). Wall time: training with its test passes, from the log; "
              "the variants ran one after the other on the machine above.", ""]
    seeds = q2_seeds(q2)
    runs = {s: seeds[s] for s in seeds}
    modes = next(iter(seeds.values()))
    n = len(seeds)
    lines += [f"## Q2's machinery offline: Fashion-MNIST 5-9 from the 0-4 model, {q2['target_train']} labelled images",
              "", f"Every mode {modes['finetune']['iterations']} iterations, from the same pretrained model, "
              + (f"run {n} times, with the solvers' `random_seed` {', '.join(list(seeds)[:-1])} and {list(seeds)[-1]}."
                 if n > 1 else f"run once (`random_seed` {next(iter(seeds))}): no spread measured."), "",
              "| mode | starts from | validation accuracy (classes 5-9): mean (range) | wall time (s): mean (range) |",
              "|---|---|---|---|"]
    for m, start in Q2_ROWS:
        acc, sec = spread(runs, m, "accuracy"), spread(runs, m, "seconds")
        lines.append(f"| {m} | {start} | {acc['mean']:.3f} ({acc['min']:.3f}-{acc['max']:.3f}) | "
                     f"{sec['mean']:.0f} ({sec['min']:.0f}-{sec['max']:.0f}) |")
    lines += ["", *conclusions(runs),
              f"The held-out submission of seed {next(iter(seeds))}'s best mode scores "
              f"{q2['heldout_accuracy']:.3f} on {q2['heldout_images']} images; the pretrained model reaches "
              f"{q2['pretrained_accuracy']:.3f} on classes 0-4.", "",
              "## Stage wall times", "", "| stage | first run, doing the work (s) | latest run (s) |", "|---|---|---|",
              *stage_rows(timings)]
    return "\n".join(lines) + "\n"


def readme_section(results_text: str) -> str:
    """The README's generated section: docs/demo_results.md without its title, headings one level down."""
    body = results_text.split("\n", 1)[1].lstrip("\n")
    body = "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())
    return (f"{README_START}\n<!-- generated from {RESULTS_FILE} by `make readme`: "
            f"edit neither by hand -->\n{body}\n{README_END}")


def with_readme_section(readme: str, results_text: str) -> str:
    """`readme` with the text between its demo:results markers replaced by readme_section(results_text)."""
    return replace_between(readme, README_START, README_END, readme_section(results_text))


def times_rows(measured: dict, bench: dict | None = None, install: dict | None = None) -> list[str]:
    """The README's table of how long the commands of "Start here" took, from docs/measured.json (and the
    committed bench results, for `make setup` on a built tree; docs/install.json, for `make setup` in a fresh
    clone, timed by the clean-root runs)."""
    rows = []
    demo = measured.get("make demo")
    if demo and demo.get("first"):
        first, latest = demo["first"], demo.get("latest")
        parts = ", ".join(f"{name.split(' ')[0]} {runinfo.duration(s)}" for name, s in first["stages"].items())
        again = ""
        if latest and latest is not first and latest.get("machine") != first.get("machine"):
            again = f"; run again, reusing everything: {runinfo.duration(latest['seconds'])}"
        rows.append(f"| `make demo` | {runinfo.duration(first['seconds'])} the first time ({parts}){again} | "
                    f"{runinfo.describe(first['machine'])} |")
    for command, what in (("make test", "the whole suite"), ("make test-fast", "the tests that train nothing")):
        r = measured.get(command)
        if not r:
            continue
        counts = f"{r['passed']} passed" + "".join(f", {r[k]} {k}" for k in ("failed", "error", "skipped",
                                                                            "deselected") if r.get(k))
        rows.append(f"| `{command}` | {runinfo.duration(r['seconds'])}: {what}, {counts} | "
                    f"{runinfo.describe(r['machine'])} |")
    setup = next((v for k, v in ((bench or {}).get("benchmarks", {}).get("setup", {}).get("results", {})).items()
                  if k.startswith("make setup")), None)
    if setup:
        date = (bench.get("benchmarks", {}).get("setup", {}).get("date") or "?")[:10]
        rows.append(f"| `make setup`, everything built | {setup['median']:.1f} s (median of {len(setup['runs'])}; "
                    f"`make bench`) | {date}, {bench.get('machine', {}).get('cores', '?')} cores |")
    fresh = {"wheel-check": "`make setup CAFFE_WHEEL=...`, a fresh clone, no root (venv, requirements, the wheel)",
             "setup-test": "`make setup`, a fresh clone, building Caffe from source (Debian packages, venv, Caffe)"}
    runs = sorted((install or {}).get("runs", {}).values(), key=lambda r: (r["label"], r["release"]))
    for label, what in fresh.items():
        timed = [(r, s) for r in runs if r["label"] == label
                 for s in r["steps"] if s["command"].startswith("make setup")]
        if timed:
            took = ", ".join(f"{runinfo.duration(s['seconds'])} ({r['release']})" for r, s in timed)
            rows.append(f"| {what} | {took} | {timed[-1][0]['date'][:10]}, {timed[-1][0]['cores']} cores, clean "
                        "roots (`make portability" + ("-wheel" if label == "wheel-check" else "") + "`) |")
    return rows


def times_section(measured: dict, bench: dict | None = None, install: dict | None = None) -> str:
    rows = times_rows(measured, bench, install)
    body = ["| command | took | measured on |", "|---|---|---|", *rows] if rows else \
        ["No run has been published yet (`make demo`, `make test`, then `make readme`)."]
    return (f"{TIMES_START}\n<!-- generated from {MEASURED_FILE} (and bench/results.json, docs/install.json) by "
            f"`make readme`: edit "
            f"neither by hand -->\n" + "\n".join(body) + f"\n{TIMES_END}")


def committed_bench(repo) -> dict | None:
    f = Path(repo) / "bench/results.json"
    return read_json(f, fix=f"restore the committed copy (git checkout {f}), or run `make bench` again")


def committed_install(repo) -> dict | None:
    f = Path(repo) / "docs/install.json"  # written by tools/install_report.py --publish
    return read_json(f, fix=f"restore the committed copy (git checkout {f})")


def with_times_section(readme: str, measured: dict, bench: dict | None = None, install: dict | None = None) -> str:
    return replace_between(readme, TIMES_START, TIMES_END, times_section(measured, bench, install))


def write_results(repo, timings) -> Path | None:
    """The run's own results/demo/demo_results.md (never a committed file)."""
    text = render_results(repo, timings)
    if text is None:
        print(f"[demo] Q1 or Q2 has not run yet: no {RUN_RESULTS}")
        return None
    write_if_changed(repo / RUN_RESULTS, text)
    return repo / RUN_RESULTS


def copy_if_changed(src: Path, dest: Path) -> bool:
    data = src.read_bytes()
    if dest.exists() and dest.read_bytes() == data:
        return False
    write_bytes(dest, data)
    return True


def publish(repo) -> list[Path]:
    """`make readme`: the committed copies from the runs under results/ (docs/demo_results.md, the Q1 figure
    and its CSV, docs/measured.json, docs/caffe-selftest.md), then README.md's generated sections from the
    committed files. A part that has no run under results/ keeps its committed copy. Returns the files it
    changed."""
    from bench import run as bench_run

    repo = Path(repo)
    # the bench results first: the table of times takes `make setup`'s from bench/results.json
    changed = bench_run.publish(repo / "results/bench", repo / "bench")

    def put(dest, text):
        if write_if_changed(repo / dest, text):
            changed.append(repo / dest)

    timings = load_timings(repo / TIMINGS)
    text = render_results(repo, timings)
    if text is None:
        print(f"[readme] no complete `make demo` run under results/: {RESULTS_FILE} and {FIGURE_FILE}.png kept")
    else:
        put(RESULTS_FILE, text)
        for suffix in (".png", ".csv"):
            src = repo / (FIGURE_RUN + suffix)
            if src.exists() and copy_if_changed(src, repo / (FIGURE_FILE + suffix)):
                changed.append(repo / (FIGURE_FILE + suffix))
    if (repo / SELFTEST_RUN).exists() and copy_if_changed(repo / SELFTEST_RUN, repo / SELFTEST_FILE):
        changed.append(repo / SELFTEST_FILE)
    measured_path = repo / MEASURED_FILE
    measured = read_json(measured_path, fix=f"restore the committed copy (git checkout {MEASURED_FILE})") or {}
    if timings["runs"].get("first"):
        measured["make demo"] = timings["runs"]
    for command, rel in TEST_RECORDS.items():
        record = read_json(repo / rel, log=lambda line: print(f"[readme] {line}"), expect=TEST_RECORD,
                           again=f"the next whole `{command}` writes it again")
        if record is None:
            continue
        if record.get("failed") or record.get("error"):
            print(f"[readme] {rel}: that `{command}` had failures; its time is not published (the last one that "
                  "passed is kept)")
            continue
        measured[command] = record
    put(MEASURED_FILE, json.dumps(measured, indent=1, sort_keys=True) + "\n")
    readme = (repo / "README.md").read_text()
    readme = with_readme_section(readme, (repo / RESULTS_FILE).read_text())
    readme = with_times_section(readme, measured, committed_bench(repo), committed_install(repo))
    put("README.md", readme)
    return changed


def finish(repo, timings) -> tuple[Path, Path | None]:
    """The end of a run: its index and its results/demo/demo_results.md, both under results/ only."""
    return write_index(repo, timings), write_results(repo, timings)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python demo.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default=None, help="GPU id (needs `make setup CAFFE_GPU=1`); default CPU")
    ap.add_argument("--only", nargs="+", choices=["q1", "q2", "q3"], help="run only these stages")
    ap.add_argument("--results-only", action="store_true",
                    help=f"run nothing: rewrite {RUN_RESULTS} and the index from what results/ holds")
    ap.add_argument("--readme", action="store_true",
                    help=f"run nothing (`make readme`): publish the runs under results/ into {RESULTS_FILE}, "
                         f"{FIGURE_FILE}.png, {MEASURED_FILE} and README.md's generated sections")
    a = ap.parse_args(argv)
    repo = paths.REPO
    timings = load_timings(repo / TIMINGS)
    if a.readme:
        with exit_on(ValueError):
            changed = publish(repo)
        for f in changed:
            print(f"[readme] updated {f.relative_to(repo)}")
        if not changed:
            print("[readme] README.md and docs/ already show the runs under results/")
        return 0
    if a.results_only:
        with exit_on(ValueError):
            index, results = finish(repo, timings)
        print(f"[demo] {index}; {results}")
        return 0
    stages = [("Q1 (all variants)", "q1", stage_q1), ("Q2 offline (pretrain + transfer)", "q2", stage_q2),
              ("Q3 notebooks", "q3", stage_q3)]
    from q3_visualize_break.run_notebooks import NotebookError

    run = {"machine": runinfo.machine(), "stages": {}}
    begin = time.time()
    with exit_on(NotebookError, ValueError):
        caffe_runner.gpu_args(a.gpu)  # a GPU asked of a CPU-only build: say so before any work
        for title, key, stage in stages:
            if a.only and key not in a.only:
                continue
            print(f"[demo] {title}")
            start = time.time()
            stage(repo, a.gpu or None)
            seconds = time.time() - start
            run["stages"][title] = round(seconds, 1)
            timings["stages"].setdefault(title, {"first": seconds})["latest"] = seconds
            write_text(repo / TIMINGS, json.dumps(timings, indent=1) + "\n")
    if not a.only:  # a whole run: its time, and the first one's, go to the README through `make readme`
        run |= {"seconds": round(time.time() - begin, 1), "loadavg_end": runinfo.loadavg()}
        timings["runs"].setdefault("first", run)
        timings["runs"]["latest"] = run
        write_text(repo / TIMINGS, json.dumps(timings, indent=1) + "\n")
    index, results = finish(repo, timings)
    print(f"\n[demo] done; the index, {index.relative_to(repo)}:\n")
    print(index.read_text())
    if results:
        print(f"[demo] the measured numbers: {results.relative_to(repo)} (`make readme` publishes them into README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
