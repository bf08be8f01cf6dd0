"""Stock Caffe, Caffe with OpenMP (make setup's default) and PyTorch (CPU): forward+backward of the same nets.

BVLC AlexNet at batch 16 (227x227, grouped convolutions, LRN; tools.alexnet.deploy with
force_backward, so backward reaches the data as in Q3) and Q1's dropout ConvNet at batch 128 on
Fashion-MNIST 1x28x28 (q1_dropout_augment.nets with Input layers and its softmax loss). Caffe: `caffe
time` (tools.caffe_runner.time_net; TRAIN phase, the mean of its iterations after one warm-up) of both
builds: stock Caffe (CAFFE_OPENMP=0, tools/setup/stock_prefix.sh) and the OpenMP build .venv uses.
PyTorch: bench/torch_nets.py in its own process, warm-up then the median (and mean) of N iterations.
All at the same thread count. `caffe time` only prints means, so the OpenMP build is also timed per
iteration through pycaffe (net.forward(); net.backward(), TRAIN phase: the same calls) for a ratio of
medians. Stock `caffe time`, OpenMP `caffe time`, pycaffe and PyTorch take turns over three rounds, so
that drift of the machine's speed (10-20% over minutes on this VM) hits all alike; the per-round ratios
show what is left of it. Both builds' per-layer reports give where the time went, before and after.
Achieved GFLOP/s count conv/fc layers only (bench/caffe_nets.py), and are set against the machine's
measured ceiling: a 2048x2048 matrix product (bench/gemm.py) in each library, OpenBLAS for Caffe and
PyTorch's own for PyTorch, timed in every round beside the nets, so that "x% of the GEMM ceiling" means
the same on any machine (clock, turbo and the libraries' kernels for that CPU are all in the ceiling).
For AlexNet, its two LRN layers are also timed alone in PyTorch, against their share in `caffe time`'s
per-layer report, and one PyTorch iteration is run with oneDNN's verbose mode: the kernels oneDNN picked
for this CPU (its ISA, e.g. jit:avx512_core or brgconv) and the share of layout reorders. PyTorch's time
differed by 1.6x between two 2-core AMD EPYC machines (434 and 709 ms) where Caffe's differed by 1.2x;
with the ceilings, the kernels and the reorder share recorded, the next such difference can be traced to
the clock (both ceilings move), to a library's kernels for that CPU (one fraction of its ceiling moves)
or to memory-bound reorders (their share moves).
"""

import json
import statistics
import subprocess
import sys
from collections import defaultdict

from bench import caffe_nets, machine
from bench.common import builds, child_main, python_json, stats, table, thread_env, threads, timed
from tools import caffe_runner, paths

GEMM_LAYERS = ("Convolution", "InnerProduct")
GOAL_OPENMP_OVER_TORCH = 0.85  # the OpenMP build at most 0.85x PyTorch's time


def cases(quick):
    return [
        {"key": "alexnet_b16", "name": "BVLC AlexNet 227x227", "batch": 16, "torch_net": "alexnet",
         "net": caffe_nets.alexnet_deploy(16), "input_grad": True,
         "iterations": 4 if quick else 12, "warmup": 1 if quick else 2},
        {"key": "q1_dropout_b128", "name": "Q1 ConvNet (dropout), Fashion-MNIST 1x28x28", "batch": 128,
         "torch_net": "q1", "net": caffe_nets.q1_input_net("dropout", 128), "input_grad": False,
         "iterations": 10 if quick else 90, "warmup": 3 if quick else 10},
    ]


def layer_type_ms(net, per_layer) -> dict:
    """Caffe's forward+backward ms per iteration summed per layer type, largest first."""
    types = {layer.name: layer.type for layer in net.layer}
    totals = defaultdict(float)
    for name, ms in per_layer.items():
        totals[types.get(name, "other")] += ms.get("forward", 0.0) + ms.get("backward", 0.0)
    return {t: round(v, 3) for t, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def layer_shares(net, per_layer) -> dict:
    """Share of Caffe's forward+backward time per layer type, in percent."""
    totals = layer_type_ms(net, per_layer)
    whole = sum(totals.values()) or 1.0
    return {t: round(100 * v / whole, 1) for t, v in totals.items()}


def before_after(stock_ms: dict, openmp_ms: dict) -> list[dict]:
    """Per layer type: stock and OpenMP ms, the speed-up, and each build's share of its own total."""
    whole_s, whole_o = sum(stock_ms.values()) or 1.0, sum(openmp_ms.values()) or 1.0
    rows = []
    for t in sorted(set(stock_ms) | set(openmp_ms), key=lambda k: -stock_ms.get(k, 0.0)):
        s, o = stock_ms.get(t, 0.0), openmp_ms.get(t, 0.0)
        rows.append({"type": t, "stock_ms": s, "openmp_ms": o, "speedup": s / o if o > 0 else None,
                     "stock_share_pct": round(100 * s / whole_s, 1), "openmp_share_pct": round(100 * o / whole_o, 1)})
    return rows


ROUNDS = 3  # stock, OpenMP, pycaffe and PyTorch take turns, so that drift of the machine's speed hits all alike


def average_timings(timings) -> dict:
    """The mean of several `caffe time` results (same iteration count each), per-layer figures included."""
    out = {k: sum(t[k] for t in timings) / len(timings) for k in ("forward", "backward", "forward-backward")}
    layers = {}
    for t in timings:
        for name, ms in t["layers"].items():
            for phase, v in ms.items():
                layers.setdefault(name, {}).setdefault(phase, 0.0)
                layers[name][phase] += v / len(timings)
    return out | {"layers": layers}


def gemm_ceiling() -> dict:
    """GFLOP/s of a 2048x2048 matrix product now, in Caffe's OpenBLAS and in PyTorch (bench/gemm.py)."""
    return {lib: python_json(["bench.gemm", lib])["gflops"] for lib in ("openblas", "torch")}


def onednn_profile(net, batch) -> dict:
    """One PyTorch forward+backward with oneDNN's verbose mode (bench.torch_nets onednn): its ISA, and per
    primitive kind and implementation the calls and ms. Verbose timing adds a little; read shares, not times."""
    proc = subprocess.run([sys.executable, "-m", "bench.torch_nets", "onednn", "--net", net, "--batch", str(batch)],
                          cwd=paths.REPO, env=thread_env(threads()),
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    lines = proc.stdout.splitlines()
    out = {"isa": "", "kernels": {}, "ms": 0.0} | json.loads(lines[-1])
    for line in lines[:-1]:
        f = line.split(",")
        if len(f) > 3 and f[2:4] == ["info", "cpu"] and f[4].startswith("isa:"):
            out["isa"] = f[4][4:]
        elif len(f) > 8 and f[2:4] == ["primitive", "exec"]:
            key = f"{f[5]} {f[6]} {f[7]}"
            k = out["kernels"].setdefault(key, {"calls": 0, "ms": 0.0})
            k["calls"] += 1
            k["ms"] += float(f[-1])
            out["ms"] += float(f[-1])
    kinds = defaultdict(float)
    for key, k in out["kernels"].items():
        kinds[key.split()[0]] += k["ms"]
    out["share_pct"] = {kind: round(100 * ms / (out["ms"] or 1.0), 1) for kind, ms in kinds.items()}
    return out


def caffe_result(net_param, timing, gflop) -> dict:
    s = timing["forward-backward"] / 1000
    return {"forward_backward_s": s, "forward_s": timing["forward"] / 1000, "backward_s": timing["backward"] / 1000,
            "gflops": gflop / s, "layer_type_share_pct": layer_shares(net_param, timing["layers"]),
            "layer_type_ms": layer_type_ms(net_param, timing["layers"]), "layers_ms": timing["layers"]}


def run(quick, work):
    import caffe

    peak = machine.peak(threads())["gflops"]
    rounds = 1 if quick else ROUNDS
    caffes = builds()
    stock = caffes["stock"]
    results = {}
    for case in cases(quick):
        path = caffe_nets.write(case["net"], work / f"{case['key']}.prototxt")
        net = caffe.Net(str(path), caffe.TRAIN)  # `caffe time`'s phase: dropout on
        flops = caffe_nets.flops(caffe_nets.conv_fc_macs(net), case["input_grad"])

        def step(net=net):
            net.forward()
            net.backward()

        per_round = case["iterations"] // rounds
        gflop = flops["forward_backward"] / 1e9
        timings, stock_timings, py, pt = [], [], [], []
        ratios, omp_ratios, speedups, ceilings, of_ceiling = [], [], [], [], []
        for i in range(rounds):
            print(f"[frameworks] {case['key']} round {i + 1}/{rounds}: stock caffe time, OpenMP caffe time, pycaffe, "
                  "PyTorch, GEMM ceilings", flush=True)
            s = caffe_runner.time_net(path, work / f"{case['key']}.stock{i}.log", iterations=per_round,
                                      caffe=stock["caffe"], pythonpath=stock["pythonpath"])
            o = caffe_runner.time_net(path, work / f"{case['key']}.time{i}.log", iterations=per_round)
            p = timed(step, per_round, 1 if i == 0 else 0)
            t = python_json(["bench.torch_nets", "fwdbwd", "--net", case["torch_net"], "--batch", case["batch"],
                             "--iterations", per_round, "--warmup", case["warmup"]])
            stock_timings.append(s)
            timings.append(o)
            py, pt = py + p["samples"], pt + t["samples"]
            ratios.append(p["median"] / t["median"])
            omp_ratios.append(o["forward-backward"] / 1000 / t["mean"])
            speedups.append(s["forward-backward"] / o["forward-backward"])
            g = gemm_ceiling()
            ceilings.append(g)
            # each build's GFLOP/s in this round over its own library's matrix product in this round
            of_ceiling.append({"stock": gflop / (s["forward-backward"] / 1000) / g["openblas"],
                               "openmp": gflop / (o["forward-backward"] / 1000) / g["openblas"],
                               "torch": gflop / t["mean"] / g["torch"]})
        lrn_shapes = [net.blobs[b].data.shape for b in ("conv1", "conv2")] if case["torch_net"] == "alexnet" else []
        del net
        pycaffe, torch = stats(py), stats(pt)
        omp = caffe_result(case["net"], average_timings(timings), gflop)
        old = caffe_result(case["net"], average_timings(stock_timings), gflop)
        iterations = per_round * rounds
        r = results[case["key"]] = {
            "name": case["name"], "batch": case["batch"], "gflop_per_iteration": round(gflop, 3),
            "forward_gflop": round(flops["forward"] / 1e9, 3),
            "caffe": omp | {"iterations": iterations, "build": caffes["openmp"]["name"]},
            "stock": old | {"iterations": iterations, "build": stock["name"]},
            "pycaffe": pycaffe,
            "torch": torch | {"gflops_median": gflop / torch["median"]},
            "ratio_caffe_over_torch_mean": omp["forward_backward_s"] / torch["mean"],
            "ratio_openmp_over_torch_per_round": omp_ratios,
            "ratio_stock_over_torch_mean": old["forward_backward_s"] / torch["mean"],
            "speedup_openmp_over_stock": old["forward_backward_s"] / omp["forward_backward_s"],
            "speedup_openmp_over_stock_per_round": speedups,
            "ratio_caffe_over_torch_median": pycaffe["median"] / torch["median"],
            "ratio_medians_per_round": ratios,
            "layer_types_before_after": before_after(old["layer_type_ms"], omp["layer_type_ms"]),
            "gemm_gflops_per_round": ceilings,
            "of_gemm_ceiling_per_round": of_ceiling,
            "of_gemm_ceiling": {k: statistics.median(r[k] for r in of_ceiling) for k in ("stock", "openmp", "torch")},
        }
        if case["torch_net"] == "alexnet":
            r["onednn"] = onednn_profile(case["torch_net"], case["batch"])
        if lrn_shapes:
            args = [a for shape in lrn_shapes for a in ("--shape", ",".join(map(str, shape)))]
            lrn = python_json(["bench.torch_nets", "lrn", *args, "--iterations", case["iterations"]])
            r["lrn"] = {"caffe_s": omp["layer_type_ms"].get("LRN", 0.0) / 1000,
                        "stock_s": old["layer_type_ms"].get("LRN", 0.0) / 1000,
                        "torch_s": lrn["median_total"], "torch": lrn}
    check = python_json(["bench.torch_nets", "check"])
    # the ceiling: the best of every round's matrix products
    gemm = {lib: max(g[lib] for r in results.values() for g in r["gemm_gflops_per_round"])
            for lib in ("openblas", "torch")}
    return {"title": "1. Stock Caffe, Caffe with OpenMP and PyTorch (CPU), forward+backward", "peak_gflops": peak,
            "gemm_gflops": gemm, "builds": caffes, "cases": results, "check": check,
            "tables": tables(results, check, peak, gemm, caffes)}


def per_round(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def tables(results, check, peak, gemm, caffes):
    rows, flops_rows, layer_rows, onednn_rows = [], [], [], []
    for r in results.values():
        c, s, p, t = r["caffe"], r["stock"], r["pycaffe"], r["torch"]
        rows.append([r["name"], r["batch"], 1000 * s["forward_backward_s"], 1000 * c["forward_backward_s"],
                     1000 * t["mean"],
                     f"{r['speedup_openmp_over_stock']:.2f}x ({per_round(r['speedup_openmp_over_stock_per_round'])})",
                     f"{r['ratio_caffe_over_torch_mean']:.2f} ({per_round(r['ratio_openmp_over_torch_per_round'])})",
                     r["ratio_stock_over_torch_mean"]])
        ceil = r.get("of_gemm_ceiling")  # absent in results from before it was measured
        flops_rows.append([r["name"], 1000 * p["median"], 1000 * t["median"],
                           f"{r['ratio_caffe_over_torch_median']:.2f} ({per_round(r['ratio_medians_per_round'])})",
                           r["gflop_per_iteration"], s["gflops"], c["gflops"], t["gflops_median"],
                           f"{100 * s['gflops'] / peak:.0f}% / {100 * c['gflops'] / peak:.0f}% / "
                           f"{100 * t['gflops_median'] / peak:.0f}%",
                           f"{100 * ceil['stock']:.0f}% / {100 * ceil['openmp']:.0f}% / {100 * ceil['torch']:.0f}%"
                           if ceil else "-",
                           f"{ceil['torch'] / ceil['openmp']:.2f}" if ceil else "-"])
        dnn = r.get("onednn")
        if dnn and "kernels" in dnn:
            convs = sorted(((k, v) for k, v in dnn["kernels"].items() if k.startswith("convolution")),
                           key=lambda kv: -kv[1]["ms"])
            conv, reorder = (dnn["share_pct"].get(kind, 0.0) for kind in ("convolution", "reorder"))
            onednn_rows.append([r["name"], dnn["isa"], "; ".join(f"{k.split(' ', 1)[1]} x{v['calls']} "
                                                                 f"{100 * v['ms'] / dnn['ms']:.0f}%"
                                                                 for k, v in convs),
                                f"{conv:.0f}%", f"{reorder:.0f}%", f"{100 - conv - reorder:.0f}%",
                                1000 * dnn["seconds"], dnn["ms"]])
        for row in r["layer_types_before_after"]:
            if row["type"] == "Input":
                continue
            name = row["type"]
            if name == "LRN" and "lrn" in r:
                name += f" (PyTorch's LRN alone: {1000 * r['lrn']['torch_s']:.0f} ms)"
            layer_rows.append([r["name"], name, row["stock_ms"], row["openmp_ms"],
                               f"{row['speedup']:.2f}x" if row["speedup"] else "-",
                               f"{row['stock_share_pct']:.0f}%", f"{row['openmp_share_pct']:.0f}%"])
    return [
        table(f"Forward+backward per iteration: `caffe time` of each Caffe build against PyTorch (ratio < 1: Caffe "
              f"faster; goal: OpenMP / PyTorch at most {GOAL_OPENMP_OVER_TORCH})",
              ["net", "batch", "stock Caffe ms", "Caffe OpenMP ms", "PyTorch ms (mean)",
               "OpenMP speed-up over stock (per round)", "OpenMP / PyTorch (means; per round)", "stock / PyTorch"],
              rows,
              f"Stock: {caffes['stock']['name']} (links {caffes['stock']['openblas']}); OpenMP: "
              f"{caffes['openmp']['name']} (links {caffes['openmp']['openblas']}; openmp="
              f"{caffes['openmp']['openmp']} in its .complete), the build .venv uses. Each round runs stock `caffe "
              "time`, OpenMP `caffe time`, pycaffe and PyTorch in turn; ratios of the means over all rounds, with "
              "each round's own ratio in brackets."),
        table("Medians and achieved GFLOP/s",
              ["net", "Caffe OpenMP ms (pycaffe, median)", "PyTorch ms (median)",
               "OpenMP / PyTorch (medians; per round)", "GFLOP / iteration", "stock GFLOP/s", "OpenMP GFLOP/s",
               "PyTorch GFLOP/s (median)", "of peak (stock / OpenMP / PyTorch)",
               "of own GEMM ceiling (stock / OpenMP / PyTorch)", "OpenMP / PyTorch at equal GEMM ceilings"],
              flops_rows,
              f"GFLOP: conv + fc layers, forward 2 x MACs, backward 2 x MACs (weights) + 2 x MACs (data). Peak "
              f"{peak:.0f} GFLOP/s (see the machine table), from the nominal clock. The practical ceiling: a "
              f"2048x2048 matrix product (bench/gemm.py), timed in every round beside the nets, reached up to "
              f"{gemm['openblas']:.0f} GFLOP/s in Caffe's OpenBLAS and {gemm['torch']:.0f} in PyTorch. Of own GEMM "
              "ceiling: each build's GFLOP/s in a round over its own library's matrix product in that round (Caffe: "
              "OpenBLAS; PyTorch: its own), the median over rounds; it carries the machine's clock and turbo and the "
              "library's kernels for this CPU, so it compares across machines where milliseconds do not. OpenMP / "
              "PyTorch at equal GEMM ceilings: PyTorch's fraction over Caffe's, i.e. the time ratio had both "
              "libraries' matrix products been equally fast (the goal is on the time ratio itself)."),
        table("Where Caffe's time goes per layer type, before (stock) and after (OpenMP): forward+backward ms per "
              "iteration, from `caffe time`'s per-layer report",
              ["net", "layer type", "stock ms", "OpenMP ms", "speed-up", "share, stock", "share, OpenMP"],
              layer_rows,
              "Stock Caffe runs LRN, pooling, ReLU, dropout and im2col/col2im as single-threaded loops (only its "
              "GEMMs use both threads); the OpenMP patches (tools/setup/patches/001*-openmp-*) run them, and "
              "convolution over the images of a batch, on every thread. PyTorch's LocalResponseNorm is composed "
              "of pow/avg_pool3d/mul/div ops, forward and backward."),
        table("PyTorch's convolutions through oneDNN: one AlexNet forward+backward with oneDNN's verbose mode",
              ["net", "oneDNN ISA", "convolution kernels (implementation, pass: calls, share of oneDNN's time)",
               "convolution", "reorders", "other oneDNN", "iteration ms (verbose on)", "oneDNN ms"], onednn_rows,
              "oneDNN picks its kernels by the CPU's instruction set, and PyTorch keeps tensors in plain NCHW, so "
              "each convolution, forward and in both backward passes, reorders its inputs and outputs to and from "
              "oneDNN's blocked layouts: memory-bound work whose share moves with the machine's memory bandwidth "
              "and caches. Verbose timing adds a little to each primitive: read shares, not times."),
        table("Same net? Caffe's random weights copied into the PyTorch net, same input, TEST phase",
              ["net", "max |Caffe - PyTorch| / max |output|", "LRN shrinks conv1 by"],
              [[k, v["relative"], f"{100 * v['lrn_shrink']:.0f}%" if "lrn_shrink" in v else "-"]
               for k, v in check.items() if isinstance(v, dict)]),
    ]


def main(argv=None):
    child_main(run, argv)


if __name__ == "__main__":
    main()
