"""Training pipeline overhead: a real `caffe train` iteration against `caffe time` of the same net.

For each input path, three measurements of the same net and solver step (SGD, momentum, weight decay):

  train, data layer    `caffe train` reading real data (seconds per iteration from the log's timestamps,
                       between a warm-up iteration and the last displayed one; no test passes)
  train, Input layers  `caffe train` of the same net with Input layers of the same shapes: everything but
                       the data path (the difference is the data path's own overhead)
  caffe time           forward+backward of that Input-layer net (what the brief compares with: the
                       difference also holds the solver's weight update)

and two more: `caffe time` of a net holding only the data layer (its prefetch thread alone, the cost of
decoding and transforming one batch), and `caffe time` of the data-layer net itself, whose per-layer report
set against that of the Input-layer net says where the gap goes. `caffe time` of Input layers computes on
all-zero blobs, and some layers take longer on real data than on zeros (stock ReLU's backward pass branched
on every element's sign, and real activations mispredict that branch half the time: patch 0018): that part
of the gap is the layers' compute, not the data path, and shows here as per-layer differences between the
two `caffe time` runs. The two trainings alternate over a few rounds (data, Input, data, Input, ...): this
machine's speed drifts by 10-20% over minutes, as much as the effect measured.

Paths: Q1's `Data` layer on an LMDB of Fashion-MNIST with its `transform_param` (mean file, scale; the
augmented variant adds random 26x26 crops and mirroring), batch 50; Q2's `ImageData` layer on JPEGs
made here (bench/images.py), full size (500-800 px) and pre-resized to 256x256 as `make q2` stores them,
through the reduced AlexNet of the offline demo (width 0.25, new_size 112, crop 99, batch 50), and the
default Q2 path itself, full AlexNet on 256x256 JPEGs (new_size 256, crop 227, batch 50), over fewer
iterations since one takes seconds on 2 cores.
"""

import statistics

import numpy as np

from bench import caffe_nets, images
from bench.common import child_main, pct, table
from tools import caffe_runner, lmdb_io, paths
from tools.parse_log import parse_log
from tools.solver import make_solver, write_solver

Q1_ROOT = "data/q1/fashion-mnist"  # relative to the work folder, where Caffe runs


def solver_file(work, net_file, max_iter, display):
    s = make_solver(net=net_file, base_lr=0.001, momentum=0.9, weight_decay=5e-4, lr_policy="fixed",
                    max_iter=max_iter, display=display, random_seed=1, solver_mode="CPU", snapshot_after_train=False)
    return write_solver(s, work / f"{net_file}.solver.prototxt")


def train_seconds(work, net_file, max_iter, display, warmup) -> dict:
    """`caffe train` of net_file for max_iter iterations; seconds per iteration after `warmup`, from the log."""
    solver = solver_file(work, net_file, max_iter, display)
    log = work / f"{net_file}.train.log"
    caffe_runner.train(solver.name, log, resume=False, cwd=work, progress=False)
    rows = [r for r in parse_log(log).train if r["NumIters"] >= warmup]
    first, last = rows[0], rows[-1]
    per_iter = (last["Seconds"] - first["Seconds"]) / (last["NumIters"] - first["NumIters"])
    intervals = [(b["Seconds"] - a["Seconds"]) / (b["NumIters"] - a["NumIters"])
                 for a, b in zip(rows, rows[1:], strict=False)]
    return {"s_per_iter": per_iter, "from_iter": first["NumIters"], "to_iter": last["NumIters"],
            "interval_min": min(intervals), "interval_max": max(intervals)}


def measure(work, key, train_val, input_shapes, *, rounds, max_iter, display, warmup, time_iterations,
            alone_iterations) -> dict:
    """The three timings of one input path; the two trainings alternate for `rounds` rounds (ABAB...), so that
    the machine's drift over minutes shows as spread between rounds rather than as overhead."""
    data_file, input_file, alone_file = f"{key}.prototxt", f"{key}.input.prototxt", f"{key}.data-only.prototxt"
    caffe_nets.write(caffe_nets.train_only(train_val), work / data_file)
    caffe_nets.write(caffe_nets.input_version(train_val, input_shapes), work / input_file)
    caffe_nets.write(caffe_nets.data_layer_only(train_val), work / alone_file)
    data_layer = next(layer.name for layer in train_val.layer if layer.type in ("Data", "ImageData"))
    data, inputs = [], []
    for _ in range(rounds):
        data.append(train_seconds(work, data_file, max_iter, display, warmup))
        inputs.append(train_seconds(work, input_file, max_iter, display, warmup))
    timed_runs, real_runs = [], []
    for r in range(rounds):  # `caffe time` of the Input-layer net (the goal's peer) and of the data-layer net, in turn
        timed_runs.append(caffe_runner.time_net(input_file, work / f"{key}.time.{r}.log", iterations=time_iterations,
                                                cwd=work))
        real_runs.append(caffe_runner.time_net(data_file, work / f"{key}.time-real.{r}.log",
                                               iterations=time_iterations, cwd=work))
    timed, real = median_timing(timed_runs), median_timing(real_runs)
    alone = caffe_runner.time_net(alone_file, work / f"{key}.alone.log", iterations=alone_iterations, cwd=work)
    fb = timed["forward-backward"] / 1000
    d = statistics.median(r["s_per_iter"] for r in data)
    i = statistics.median(r["s_per_iter"] for r in inputs)
    per_round = [pct(a["s_per_iter"], b["s_per_iter"]) for a, b in zip(data, inputs, strict=True)]
    return {"train_data_s": d, "train_input_s": i, "caffe_time_s": fb, "data_alone_s": alone["forward-backward"] / 1000,
            "caffe_time_runs_s": [t["forward-backward"] / 1000 for t in timed_runs], "rounds": rounds,
            "train_data_runs": data, "train_input_runs": inputs,
            "measured_iterations": sum(r["to_iter"] - r["from_iter"] for r in data),
            "overhead_vs_caffe_time_pct": pct(d, fb),
            "data_path_overhead_pct": statistics.median(per_round), "data_path_overhead_per_round_pct": per_round,
            "solver_update_pct": pct(i, fb), **real_data_gap(real, timed, data_layer)}


def median_timing(runs) -> dict:
    """Several `caffe time` results of one net as one: the median forward-backward ms, and per layer and pass."""
    out = {"forward-backward": statistics.median(r["forward-backward"] for r in runs), "layers": {}}
    for name, passes in runs[0]["layers"].items():
        out["layers"][name] = {which: statistics.median(r["layers"][name][which] for r in runs) for which in passes}
    return out


def real_data_gap(real, zeros, data_layer) -> dict:
    """`caffe time` of the data-layer net (real data) against that of the Input-layer net (all-zero blobs), per
    layer and pass: the compute layers' own difference (the data layer left out), the largest few, and the data
    layer's forward pass (taking a batch from the prefetch queue, waiting when it is empty)."""
    passes = []
    for name, ms in real["layers"].items():
        if name == data_layer:
            continue
        for which in ("forward", "backward"):
            if which in ms and which in zeros["layers"].get(name, {}):
                z = zeros["layers"][name][which]
                passes.append({"layer": name, "pass": which, "real_ms": ms[which], "zeros_ms": z,
                               "gap_ms": ms[which] - z})
    passes.sort(key=lambda r: -r["gap_ms"])
    return {"caffe_time_real_s": real["forward-backward"] / 1000,
            "real_vs_zeros_compute_ms": sum(r["gap_ms"] for r in passes),
            "real_vs_zeros_largest": passes[:3],
            "data_layer_forward_ms": real["layers"].get(data_layer, {}).get("forward")}


def q1_data(work, n_per_class=100):
    """Q1's inputs as `python -m q1_dropout_augment.data` makes them: the subset LMDB and its mean file."""
    from tools.datasets import load_fashion_mnist, stratified_subset

    ds = load_fashion_mnist()
    idx = stratified_subset(ds.train_labels, n_per_class, seed=0)
    root = work / Q1_ROOT
    lmdb_io.write_arrays(root / "train_subset_lmdb", ds.train_images[idx], ds.train_labels[idx])
    lmdb_io.compute_mean(root / "train_subset_lmdb", root / "train_subset_mean.binaryproto")


def jpegs(work, n):
    full = images.full_size(work / "jpeg_full", n)
    small = images.resized(full, work / "jpeg_256", (256, 256))
    sizes = [f.stat().st_size for f in full]
    return {"full": images.list_file(full, work / "full.txt"), "256": images.list_file(small, work / "256.txt"),
            "full_kb": float(np.mean(sizes)) / 1024, "256_kb": float(np.mean([f.stat().st_size for f in small])) / 1024}


def run(quick, work):
    from q1_dropout_augment import nets
    from tools import alexnet

    results = {}
    q1_data(work)
    spec = nets.DATASETS["fashion-mnist"]
    q1 = dict(rounds=1, max_iter=60, display=10, warmup=20, time_iterations=10, alone_iterations=20) if quick else \
        dict(rounds=3, max_iter=140, display=20, warmup=40, time_iterations=200, alone_iterations=200)
    for variant in ("dropout", "dropout_augment"):
        net, _ = caffe_nets.q1_train_val(variant, nets.BATCH, Q1_ROOT)
        size = spec.crop if nets.flags(variant)[1] else spec.size
        r = measure(work, f"q1_{variant}", net, [[nets.BATCH, 1, size, size], [nets.BATCH]], **q1)
        transform = "mean file, scale" + (", random 26x26 crop, mirror" if "augment" in variant else "")
        results[f"q1_{variant}"] = r | {"path": f"Q1 `Data` (LMDB, {transform})",
                                        "net": f"Q1 ConvNet ({variant}), 1x{size}x{size}", "batch": nets.BATCH}

    made = jpegs(work, 100 if quick else 300)
    mean = (104.0, 117.0, 123.0)
    reduced = dict(width=0.25, new_size=112, crop=99)
    red = dict(rounds=1, max_iter=30, display=5, warmup=10, time_iterations=5, alone_iterations=10) if quick else \
        dict(rounds=3, max_iter=50, display=5, warmup=10, time_iterations=20, alone_iterations=40)
    cases = [("reduced_full", "full", reduced, red), ("reduced_256", "256", reduced, red)]
    if not quick:
        cases.append(("alexnet_256", "256", dict(width=1.0, new_size=256, crop=227),
                      dict(rounds=3, max_iter=7, display=1, warmup=2, time_iterations=4, alone_iterations=40)))
    for key, size, geometry, iters in cases:
        listing = made[size]
        root = str(work / ("jpeg_full" if size == "full" else "jpeg_256")) + "/"
        net = alexnet.train_val(listing, listing, num_classes=10, batch_size=50, root_folder=root, mean_value=mean,
                                name=f"bench-{key}", **geometry)
        c = geometry["crop"]
        r = measure(work, key, net, [[50, 3, c, c], [50]], **iters)
        kb = made["full_kb"] if size == "full" else made["256_kb"]
        what = "500-800 px" if size == "full" else "256x256"
        results[key] = r | {"path": f"Q2 `ImageData`, JPEGs {what} (mean {kb:.0f} KB), new_size {geometry['new_size']}",
                            "net": ("AlexNet" if geometry["width"] == 1 else "reduced AlexNet (width 0.25)")
                            + f", crop {c}", "batch": 50}
    default = results.get("alexnet_256")
    if default is None:
        verdict = "not measured (--quick)"
    else:
        over, alone = default["overhead_vs_caffe_time_pct"], default["data_path_overhead_pct"]
        spread = ", ".join(f"{v:+.0f}%" for v in default["data_path_overhead_per_round_pct"])
        verdict = (f"{over:+.1f}% over caffe time, {alone:+.1f}% over the same training with Input layers (rounds: "
                   f"{spread}): {'holds' if over <= 10 else 'does NOT hold'} (goal: `caffe train` within 10% of "
                   f"`caffe time`); its data layer by itself takes {default['data_alone_s']:.3f} s per batch on one "
                   "thread")
    build = f"{paths.caffe_prefix().name} (openmp={paths.build_info().get('openmp', '?')})"
    return {"title": "3. Training pipeline overhead (Caffe with OpenMP)", "cases": results,
            "default_path_verdict": verdict, "build": build, "tables": [table(
                "Seconds per iteration: `caffe train` with the data layer, with Input layers, and `caffe time`",
                ["input path", "net", "batch", "iterations timed", "train, data layer (s)", "train, Input layers (s)",
                 "caffe time fwd+bwd (s)", "overhead vs caffe time", "data path alone (median; per round)",
                 "Input train vs caffe time", "data layer by itself (s / batch)"],
                [[r["path"], r["net"], r["batch"], r["measured_iterations"], r["train_data_s"], r["train_input_s"],
                  r["caffe_time_s"], f"{r['overhead_vs_caffe_time_pct']:+.1f}%",
                  f"{r['data_path_overhead_pct']:+.1f}% ("
                  + ", ".join(f"{v:+.0f}%" for v in r["data_path_overhead_per_round_pct"]) + ")",
                  f"{r['solver_update_pct']:+.1f}%", r["data_alone_s"]] for r in results.values()],
                "Trainings: the median over rounds, each round a data-layer run then an Input-layer run. Overhead "
                "vs caffe time = train (data layer) / caffe time - 1; data path alone = train (data layer) / train "
                "(Input layers) - 1, per round; Input train vs caffe time = train (Input layers) / caffe time - 1 "
                "(the solver's update, and how far `caffe time` and `caffe train` disagree on the same work). Data "
                "layer by itself: `caffe time` of a net holding only the data layer, i.e. its prefetch thread (one "
                "thread: decode, resize, crop, mirror, mean) with the cores to itself (the first few batches come "
                "prefetched). "
                f"Caffe: {build}, the build .venv uses. "
                "The default Q2 path (`make q2`: 256x256 JPEGs, full AlexNet): " + verdict + "."), table(
                "Where the gap goes: `caffe time` of the data-layer net (real data) against the Input-layer net "
                "(all-zero blobs), ms per iteration",
                ["input path", "train, data - Input layers", "caffe time, real data - zeros",
                 "of which compute layers", "largest differences (layer pass: real - zeros)",
                 "data layer forward (taking a batch)"],
                [[r["path"], 1000 * (r["train_data_s"] - r["train_input_s"]),
                  1000 * (r["caffe_time_real_s"] - r["caffe_time_s"]), r["real_vs_zeros_compute_ms"],
                  "; ".join(f"{g['layer']} {g['pass']} {g['real_ms']:.3g} - {g['zeros_ms']:.3g}"
                            for g in r["real_vs_zeros_largest"]), r["data_layer_forward_ms"]]
                 for r in results.values()],
                "Both `caffe time` runs take turns over the same rounds as the trainings (medians; per layer and pass "
                "the median of its own times). On a quiet machine, a layer slower on real data than on zeros does "
                "data-dependent work (e.g. branches that real values mispredict): that part of the gap is compute "
                "which `caffe time` of Input layers never sees, not the data path; under load single layers' times "
                "scatter by more than that. The data layer's forward pass takes the next prefetched "
                "batch: what it costs beyond that is waiting for the prefetch thread.")]}


def main(argv=None):
    child_main(run, argv)


if __name__ == "__main__":
    main()
