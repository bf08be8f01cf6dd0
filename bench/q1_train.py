"""Q1 training per variant: `caffe train` of stock Caffe against Caffe with OpenMP, as `make q1` runs it.

Each of Q1's five variants (q1_dropout_augment.nets: baseline, dropout, augment, dropout_augment and
dropout_augment_rta, whose Python warp layer runs inside the binary) is trained on Fashion-MNIST data
prepared the way `make q1` prepares it (q1_dropout_augment.data.prepare: 100 images per class, seed 0),
with its own solver (q1_dropout_augment.experiment.spec_for, as make q1 writes it), for a fixed number
of iterations (400; the make q1 default is 2000) with its real test passes (the solver's test nets,
every test_interval iterations and at iteration 0, as make q1 runs them), by tools.caffe_runner.train
with each build's binary. From each run's phases, the time of make q1's own length is projected.
Both builds take turns per variant, the order flipping from one variant (and round) to the next, so
that drift of the machine's speed hits both alike.

Times: Caffe's own, from the log's timestamps (first line to last: net set-up, training iterations,
test passes), split into set-up, test passes (from "Testing net" to the last "Test net output" of each
pass) and training iterations (the rest); and the wall time of the whole call (with the runner's input
checks, the same for both builds). The speed-up is stock over OpenMP on Caffe's time, per round.
"""

import re
import statistics
from datetime import datetime

from bench.common import builds, child_main, table
from tools import caffe_runner
from tools.parse_log import GLOG_TIME, parse_log

GOAL_SPEEDUP = 1.4  # Q1 per-variant training at least 1.4x faster than stock
TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
TEST_OUTPUT = re.compile(r"Test net output #\d+: ")
SOLVING = re.compile(r"\] Solving ")
SOLVER_LINE = re.compile(r"\] Iteration \d+[ ,]")  # the solver's progress lines (loss, lr), not a test pass's
DONE = "Optimization Done"


def _stamp(m) -> float:
    year, month, day, hh, mm, sec = m.groups()
    return datetime(int(year or 2000), int(month), int(day), int(hh), int(mm)).timestamp() + float(sec)


def log_phases(lines) -> dict:
    """Seconds of a `caffe train` log by phase: setup_s (first line to "Solving"), test_s (every test pass,
    from its first "Testing net" line to its last "Test net output" line, before the solver's next
    "Iteration N" line or the end), train_s (the rest), caffe_s (all), and the number of test passes."""
    first = solving = last = None
    test_s, passes, start, end = 0.0, 0, None, None
    for line in lines:
        m = GLOG_TIME.match(line)
        if not m:
            continue
        t = _stamp(m)
        first = t if first is None else first
        last = t
        if solving is None and SOLVING.search(line):
            solving = t
        if TESTING.search(line):
            start = t if start is None else start
        elif TEST_OUTPUT.search(line):
            end = t if start is not None else end
        elif start is not None and (SOLVER_LINE.search(line) or DONE in line):  # the pass is over
            test_s, passes, start, end = test_s + (end if end is not None else t) - start, passes + 1, None, None
    if start is not None:  # the log ends with a test pass
        test_s, passes = test_s + (end if end is not None else last) - start, passes + 1
    if first is None:
        return {"caffe_s": 0.0, "setup_s": 0.0, "test_s": 0.0, "train_s": 0.0, "test_passes": 0}
    solving = first if solving is None else solving
    return {"caffe_s": last - first, "setup_s": solving - first, "test_s": test_s,
            "train_s": last - solving - test_s, "test_passes": passes}


def projected(phases: dict, iterations: int, max_iter: int, test_interval: int) -> float:
    """Seconds a run of `max_iter` iterations with a test pass every `test_interval` (and at 0) would take, from
    the phases of a shorter run: set-up, plus its seconds per iteration and per test pass scaled up."""
    passes = max_iter // test_interval + 1
    per_pass = phases["test_s"] / phases["test_passes"] if phases["test_passes"] else 0.0
    return phases["setup_s"] + phases["train_s"] * max_iter / max(iterations, 1) + per_pass * passes


def order(variant_index: int, round_index: int) -> tuple[str, str]:
    """Which build trains a variant first: flips from variant to variant and from round to round."""
    return ("stock", "openmp") if (variant_index + round_index) % 2 == 0 else ("openmp", "stock")


def prepare(work, max_iter):
    from q1_dropout_augment import data, experiment

    info = data.prepare("fashion-mnist", 100, 0, repo=work, log=lambda s: print(s, flush=True))
    return experiment.spec_for("fashion-mnist", info, max_iter)


def train_once(work, spec, variant, build, key) -> dict:
    from q1_dropout_augment import nets

    folder = f"models/{key}/{variant}"
    nets.write(spec, variant, work, folder, run_folder=f"runs/{key}/{variant}")
    log = work / "runs" / key / variant / "train.log"
    r = caffe_runner.train(f"{folder}/solver.prototxt", log, cwd=work, progress=False, resume=False,
                           caffe=build["caffe"], pythonpath=build["pythonpath"], desc=f"{key}/{variant}")
    lines = log.read_text(errors="replace").splitlines()
    val = parse_log(log).test(0)
    phases = log_phases(lines)
    default = nets.DATASETS[spec.name]  # what make q1 trains
    return phases | {"wall_s": r.seconds, "iterations": r.final_iter,
                     "make_q1_s": projected(phases, r.final_iter, default.max_iter, default.test_interval),
                     "val_accuracy": val[-1].get("accuracy") if val else None}


def run(quick, work):
    from q1_dropout_augment import nets

    caffes = builds()
    max_iter = 40 if quick else 400
    rounds = 1 if quick else 2
    variants = nets.VARIANTS
    spec = prepare(work, max_iter)
    runs = {v: {"stock": [], "openmp": []} for v in variants}
    for i in range(rounds):
        for k, variant in enumerate(variants):
            for key in order(k, i):
                print(f"[q1_train] round {i + 1}/{rounds}, {variant}: {key}", flush=True)
                runs[variant][key].append(train_once(work, spec, variant, caffes[key], f"{key}-r{i}"))
    results = {}
    for variant, r in runs.items():
        per_round = [s["caffe_s"] / o["caffe_s"] for s, o in zip(r["stock"], r["openmp"], strict=True)]

        def med(key, field, r=r):
            return statistics.median(x[field] for x in r[key])

        results[variant] = {
            "runs": r, "speedup": statistics.median(per_round), "speedup_per_round": per_round,
            **{f"{key}_{field}": med(key, field) for key in ("stock", "openmp")
               for field in ("caffe_s", "wall_s", "train_s", "test_s", "setup_s", "make_q1_s")},
            "speedup_train": med("stock", "train_s") / max(med("openmp", "train_s"), 1e-9),
            "speedup_test": med("stock", "test_s") / max(med("openmp", "test_s"), 1e-9),
            "stock_val_accuracy": r["stock"][-1]["val_accuracy"],
            "openmp_val_accuracy": r["openmp"][-1]["val_accuracy"],
        }
    worst = min(results, key=lambda v: results[v]["speedup"])
    tested = getattr(spec, "val_sample_count", spec.val_count)  # make q1 tests a fixed sample of the validation set
    setup = {"max_iter": spec.max_iter, "test_interval": spec.test_interval, "val_images": tested,
             "train_subset_images": spec.train_count, "batch": nets.BATCH, "test_batch": nets.TEST_BATCH,
             "rounds": rounds}
    rows = [[v, r["stock_caffe_s"], r["openmp_caffe_s"],
             f"{r['speedup']:.2f}x ({', '.join(f'{x:.2f}' for x in r['speedup_per_round'])})",
             f"{r['speedup_train']:.2f}x", f"{r['speedup_test']:.2f}x", r["stock_wall_s"], r["openmp_wall_s"],
             f"{r['stock_make_q1_s']:.0f} -> {r['openmp_make_q1_s']:.0f}",
             f"{r['stock_val_accuracy']:.3f} / {r['openmp_val_accuracy']:.3f}"
             if r["stock_val_accuracy"] is not None and r["openmp_val_accuracy"] is not None else "-"]
            for v, r in results.items()]
    passes = results[variants[0]]["runs"]["openmp"][0]["test_passes"]
    default = nets.DATASETS["fashion-mnist"]
    return {"title": "2. Q1 training per variant: stock Caffe against Caffe with OpenMP", "setup": setup,
            "builds": {k: b["name"] for k, b in caffes.items()}, "variants": results, "worst": worst,
            "min_speedup": results[worst]["speedup"], "tables": [table(
                f"Seconds per variant, `caffe train` of {spec.max_iter} iterations of batch {nets.BATCH} with "
                f"{passes} test passes (goal: OpenMP at least {GOAL_SPEEDUP}x faster than stock)",
                ["variant", "stock Caffe s", "Caffe OpenMP s", "speed-up (per round)", "speed-up, training iterations",
                 "speed-up, test passes", "stock wall s", "OpenMP wall s", "make q1 s, projected (stock -> OpenMP)",
                 "validation accuracy (stock / OpenMP)"],
                rows,
                f"Caffe's own time from the log (net set-up, training iterations, test passes on {tested} "
                f"validation and {spec.train_count} training-subset images in batches of {nets.TEST_BATCH}, every "
                f"{spec.test_interval} iterations and at 0), median over {rounds} round(s); wall: the whole "
                "tools.caffe_runner.train call, with its input checks; make q1, projected: set-up, plus the "
                f"measured seconds per iteration and per test pass scaled to make q1's {default.max_iter} iterations "
                f"and {default.max_iter // default.test_interval + 1} test passes. Fashion-MNIST prepared as make q1 "
                "does (100 per class, seed 0). The two builds' accuracies may differ a little: the OpenMP build "
                "draws large dropout masks in fixed chunks, each from a generator seeded from Caffe's stream (the "
                "same for any thread count), and adds up some sums in another order.")]}


def main(argv=None):
    child_main(run, argv)


if __name__ == "__main__":
    main()
