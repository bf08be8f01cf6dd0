"""Caffe against PyTorch (CPU): forward+backward of the same nets, batch sizes and thread count.

BVLC AlexNet at batch 16 (227x227, grouped convolutions, LRN; q2_wikiart_finetune.alexnet.deploy with
force_backward, so backward reaches the data as in Q3) and Q1's dropout ConvNet at batch 128 on
Fashion-MNIST 1x28x28 (q1_dropout_augment.nets with Input layers and its softmax loss). Caffe: `caffe
time` (tools.caffe_runner.time_net; TRAIN phase, the mean of its iterations after one warm-up).
PyTorch: bench/torch_nets.py in its own process, warm-up then the median (and mean) of N iterations.
Both at the same thread count. `caffe time` only prints means, so Caffe is also timed per iteration
through pycaffe (net.forward(); net.backward(), TRAIN phase: the same calls) for a ratio of medians;
`caffe time`, pycaffe and PyTorch take turns over three rounds, so that drift of the machine's speed
(10-20% over minutes on this VM) hits all three alike; the per-round ratios show what is left of it.
Achieved GFLOP/s count conv/fc layers only (bench/caffe_nets.py). For AlexNet, its two LRN layers are
also timed alone in PyTorch, against their share in `caffe time`'s per-layer report.
"""

from collections import defaultdict

from bench import caffe_nets, machine
from bench.common import child_main, python_json, stats, table, threads, timed
from tools import caffe_runner

GEMM_LAYERS = ("Convolution", "InnerProduct")


def cases(quick):
    return [
        {"key": "alexnet_b16", "name": "BVLC AlexNet 227x227", "batch": 16, "torch_net": "alexnet",
         "net": caffe_nets.alexnet_deploy(16), "input_grad": True,
         "iterations": 4 if quick else 12, "warmup": 1 if quick else 2},
        {"key": "q1_dropout_b128", "name": "Q1 ConvNet (dropout), Fashion-MNIST 1x28x28", "batch": 128,
         "torch_net": "q1", "net": caffe_nets.q1_input_net("dropout", 128), "input_grad": False,
         "iterations": 10 if quick else 90, "warmup": 3 if quick else 10},
    ]


def layer_shares(net, per_layer) -> dict:
    """Share of Caffe's forward+backward time per layer type, in percent."""
    types = {layer.name: layer.type for layer in net.layer}
    totals = defaultdict(float)
    for name, ms in per_layer.items():
        totals[types.get(name, "other")] += ms.get("forward", 0.0) + ms.get("backward", 0.0)
    whole = sum(totals.values()) or 1.0
    return {t: round(100 * v / whole, 1) for t, v in sorted(totals.items(), key=lambda kv: -kv[1])}


ROUNDS = 3  # caffe time, pycaffe and PyTorch take turns, so that drift of the machine's speed hits all alike


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


def run(quick, work):
    import caffe

    peak = machine.peak(threads())["gflops"]
    rounds = 1 if quick else ROUNDS
    results = {}
    for case in cases(quick):
        path = caffe_nets.write(case["net"], work / f"{case['key']}.prototxt")
        net = caffe.Net(str(path), caffe.TRAIN)  # `caffe time`'s phase: dropout on
        flops = caffe_nets.flops(caffe_nets.conv_fc_macs(net), case["input_grad"])

        def step(net=net):
            net.forward()
            net.backward()

        per_round = case["iterations"] // rounds
        timings, py, pt, ratios = [], [], [], []
        for i in range(rounds):
            timings.append(caffe_runner.time_net(path, work / f"{case['key']}.time{i}.log", iterations=per_round))
            p = timed(step, per_round, 1 if i == 0 else 0)
            t = python_json(["bench.torch_nets", "fwdbwd", "--net", case["torch_net"], "--batch", case["batch"],
                             "--iterations", per_round, "--warmup", case["warmup"]])
            py, pt = py + p["samples"], pt + t["samples"]
            ratios.append(p["median"] / t["median"])
        timing = average_timings(timings)
        lrn_shapes = [net.blobs[b].data.shape for b in ("conv1", "conv2")] if case["torch_net"] == "alexnet" else []
        del net
        pycaffe, torch = stats(py), stats(pt)
        caffe_s = timing["forward-backward"] / 1000
        gflop = flops["forward_backward"] / 1e9
        r = results[case["key"]] = {
            "name": case["name"], "batch": case["batch"], "gflop_per_iteration": round(gflop, 3),
            "forward_gflop": round(flops["forward"] / 1e9, 3),
            "caffe": {"forward_backward_s": caffe_s, "forward_s": timing["forward"] / 1000,
                      "backward_s": timing["backward"] / 1000, "iterations": per_round * rounds,
                      "gflops": gflop / caffe_s, "layer_type_share_pct": layer_shares(case["net"], timing["layers"]),
                      "layers_ms": timing["layers"]},
            "pycaffe": pycaffe,
            "torch": torch | {"gflops_median": gflop / torch["median"]},
            "ratio_caffe_over_torch_mean": caffe_s / torch["mean"],
            "ratio_caffe_over_torch_median": pycaffe["median"] / torch["median"],
            "ratio_medians_per_round": ratios,
        }
        if lrn_shapes:
            args = [a for shape in lrn_shapes for a in ("--shape", ",".join(map(str, shape)))]
            lrn = python_json(["bench.torch_nets", "lrn", *args, "--iterations", case["iterations"]])
            caffe_lrn = sum(ms.get("forward", 0) + ms.get("backward", 0) for name, ms in timing["layers"].items()
                            if name.startswith("norm")) / 1000
            r["lrn"] = {"caffe_s": caffe_lrn, "torch_s": lrn["median_total"], "torch": lrn}
    check = python_json(["bench.torch_nets", "check"])
    gemm = {lib: python_json(["bench.gemm", lib])["gflops"] for lib in ("openblas", "torch")}
    return {"title": "1. Caffe against PyTorch (CPU), forward+backward", "peak_gflops": peak, "gemm_gflops": gemm,
            "cases": results, "check": check, "tables": tables(results, check, peak, gemm)}


def tables(results, check, peak, gemm):
    rows, shares = [], []
    for r in results.values():
        c, p, t = r["caffe"], r["pycaffe"], r["torch"]
        per_round = ", ".join(f"{v:.2f}" for v in r["ratio_medians_per_round"])
        rows.append([r["name"], r["batch"], 1000 * c["forward_backward_s"], 1000 * t["mean"],
                     r["ratio_caffe_over_torch_mean"], 1000 * p["median"], 1000 * t["median"],
                     f"{r['ratio_caffe_over_torch_median']:.2f} ({per_round})", r["gflop_per_iteration"],
                     c["gflops"], t["gflops_median"],
                     f"{100 * c['gflops'] / peak:.0f}% / {100 * t['gflops_median'] / peak:.0f}%"])
        share = c["layer_type_share_pct"]
        gemm_share = sum(v for k, v in share.items() if k in GEMM_LAYERS)
        lrn = (f"; LRN alone: Caffe {1000 * r['lrn']['caffe_s']:.0f} ms, PyTorch {1000 * r['lrn']['torch_s']:.0f} ms"
               if "lrn" in r else "")
        rest = ", ".join(f"{k} {v:.0f}%" for k, v in share.items() if k not in GEMM_LAYERS)
        shares.append([r["name"], gemm_share, rest + lrn])
    return [
        table("Forward+backward per iteration (ratio < 1: Caffe faster)",
              ["net", "batch", "Caffe ms (caffe time, mean)", "PyTorch ms (mean)", "Caffe / PyTorch (means)",
               "Caffe ms (pycaffe, median)", "PyTorch ms (median)", "Caffe / PyTorch (medians; per round)",
               "GFLOP / iteration", "Caffe GFLOP/s (caffe time)", "PyTorch GFLOP/s (median)",
               "of peak (Caffe / PyTorch)"], rows,
              f"GFLOP: conv + fc layers, forward 2 x MACs, backward 2 x MACs (weights) + 2 x MACs (data). Peak "
              f"{peak:.0f} GFLOP/s (see the machine table); a 2048x2048 matrix product reaches {gemm['openblas']:.0f} "
              f"GFLOP/s in Caffe's OpenBLAS and {gemm['torch']:.0f} in PyTorch (bench/gemm.py), the practical "
              "ceiling."),
        table("Where Caffe's time goes (caffe time, per layer type, forward+backward)",
              ["net", "conv + fc (GEMM) %", "the rest"], shares,
              "Caffe's LRN, pooling, ReLU and dropout are single-threaded loops; only its GEMMs use both threads. "
              "PyTorch's LocalResponseNorm is composed of pow/avg_pool3d/mul/div ops, forward and backward."),
        table("Same net? Caffe's random weights copied into the PyTorch net, same input, TEST phase",
              ["net", "max |Caffe - PyTorch| / max |output|", "LRN shrinks conv1 by"],
              [[k, v["relative"], f"{100 * v['lrn_shrink']:.0f}%" if "lrn_shrink" in v else "-"]
               for k, v in check.items() if isinstance(v, dict)]),
    ]


def main(argv=None):
    child_main(run, argv)


if __name__ == "__main__":
    main()
