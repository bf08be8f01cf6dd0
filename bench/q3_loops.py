"""Q3's loops: seconds per iteration of class visualisation and fooling-image descent (q3_visualize_break).

Against a bare pycaffe forward+backward of the same net (the loops' Python overhead: jitter, blur,
objective, normalisation, checks), and against PyTorch autograd computing the same input gradient on
the same architecture (bench/torch_nets.py, its own process). The net: full BVLC AlexNet 227x227, batch
1, from models/q3/bvlc_alexnet_deploy_gradients.prototxt with random weights (Caffe's fillers; speed
does not depend on them). Caffe's backward also computes every weight gradient, which an input gradient
does not need; the "frozen" rows show what skipping them buys: in Caffe by lr_mult 0 on every layer
(param_propagate_down off, force_backward still reaches the data), in PyTorch by requires_grad=False.
"""

import statistics
import time

import numpy as np

from bench.common import child_main, python_json, table, timed
from bench.frameworks import layer_shares
from tools import caffe_runner, paths

PROTOTXT = paths.MODELS / "q3" / "bvlc_alexnet_deploy_gradients.prototxt"
TARGET = 281  # any class: the weights are random


def frozen_prototxt(work):
    """The gradients deploy with lr_mult 0 on every parameter: Caffe then skips the weight gradients."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    net = caffe_pb2.NetParameter()
    text_format.Parse(PROTOTXT.read_text(), net)
    for layer in net.layer:
        for p in layer.param:
            p.lr_mult = 0
    path = work / "alexnet_gradients_frozen.prototxt"
    path.write_text(text_format.MessageToString(net))
    return path


def bare(net, x, iterations, warmup) -> dict:
    """net.forward(), a one-hot score gradient, net.backward(): the least a pycaffe input gradient costs."""
    onehot = np.zeros(net.blobs["fc8"].data.shape, np.float32)
    onehot[0, TARGET] = 1

    def step():
        net.blobs["data"].data[0] = x
        net.forward()
        net.blobs["fc8"].diff[...] = onehot
        net.backward()
        return net.blobs["data"].diff

    return timed(step, iterations, warmup)


ROUNDS = 3  # every measurement once per round, so that drift of the machine's speed hits all alike


def run(quick, work):
    import caffe
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    from q3_visualize_break.class_model import class_model_visualization
    from q3_visualize_break.fooling import fooling_image

    rounds, n, warmup = (1, 3, 1) if quick else (ROUNDS, 7, 2)
    net = caffe.Net(str(PROTOTXT), caffe.TEST)
    frozen = caffe.Net(str(frozen_prototxt(work)), caffe.TEST)
    x = (50 * np.random.RandomState(0).randn(*net.blobs["data"].data.shape[1:])).astype(np.float32)
    class_model_visualization(net, TARGET, iterations=warmup)
    per_round = []
    for _ in range(rounds):
        r = {"bare_pycaffe": bare(net, x, n, warmup)["median"]}
        t0 = time.perf_counter()
        class_model_visualization(net, TARGET, iterations=n)
        r["class_visualization"] = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        # a confidence it cannot reach within n steps, so every step runs (each one forward+backward)
        fooled = fooling_image(net, x, TARGET, max_iterations=n - 1, confidence=0.999999)
        r["fooling"] = (time.perf_counter() - t0) / len(fooled.losses)
        r["bare_pycaffe_frozen"] = bare(frozen, x, n, 1)["median"]
        args = ["--iterations", n, "--warmup", warmup]
        r["torch"] = python_json(["bench.torch_nets", "inputgrad", *args])["median"]
        r["torch_frozen"] = python_json(["bench.torch_nets", "inputgrad", "--frozen", *args])["median"]
        per_round.append(r)
    del net, frozen

    timing = caffe_runner.time_net(PROTOTXT, work / "q3.time.log", iterations=n, phase="TEST")
    shares = layer_shares(text_format.Parse(PROTOTXT.read_text(), caffe_pb2.NetParameter()), timing["layers"])

    def median(f):
        return statistics.median(f(r) for r in per_round)

    labels = {"class_visualization": "class visualisation (q3 class_model_visualization)",
              "fooling": "fooling-image descent (q3 fooling_image)",
              "bare_pycaffe": "bare pycaffe forward+backward",
              "bare_pycaffe_frozen": "bare pycaffe forward+backward, lr_mult 0 (no weight gradients)",
              "torch": "PyTorch autograd, weight gradients too",
              "torch_frozen": "PyTorch autograd, requires_grad=False on weights"}
    rows, summary = [], {}
    for key, label in labels.items():
        s = median(lambda r, key=key: r[key])
        overhead = median(lambda r, key=key: 100 * (r[key] / r["bare_pycaffe"] - 1))
        vs_torch = median(lambda r, key=key: r[key] / r["torch"])
        vs_frozen = median(lambda r, key=key: r[key] / r["torch_frozen"])
        summary[key] = {"s": s, "python_overhead_pct": overhead, "over_torch": vs_torch, "over_torch_frozen": vs_frozen}
        loop = key.startswith(("class", "fool"))
        spread = ", ".join(f"{100 * (r[key] / r['bare_pycaffe'] - 1):+.0f}%" for r in per_round)
        rows.append([label, 1000 * s, f"{overhead:+.1f}% ({spread})" if loop else "-", vs_torch, vs_frozen])
    return {"title": "5. Q3 loops (AlexNet 227x227, batch 1, random weights)", "rounds": per_round,
            "iterations_per_round": n, "summary": summary,
            "caffe_time": {"forward_backward_ms": timing["forward-backward"], "layer_type_share_pct": shares},
            "tables": [table("Milliseconds per iteration (one input gradient each)",
                             ["loop", "ms / iteration", "Python overhead vs bare pycaffe (median; per round)",
                              "/ PyTorch (weight grads too)", "/ PyTorch (frozen weights)"], rows,
                             f"{rounds} rounds of {n} iterations of each, in turn; figures are medians over the "
                             "rounds of each round's median (the loops: their time divided by their steps), ratios "
                             "taken within a round. Ratios > 1: slower than PyTorch. `caffe time` of the same net "
                             f"(TEST phase): {timing['forward-backward']:.0f} ms, of which "
                             + ", ".join(f"{k} {v:.0f}%" for k, v in shares.items() if v >= 1) + ".")]}


def main(argv=None):
    child_main(run, argv)


if __name__ == "__main__":
    main()
