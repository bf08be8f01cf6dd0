"""The same nets in PyTorch (CPU), timed the way a PyTorch user would, in a process of their own.

    python -m bench.torch_nets fwdbwd --net alexnet --batch 16 --iterations 10
    python -m bench.torch_nets fwdbwd --net q1 --batch 128 --iterations 50
    python -m bench.torch_nets inputgrad --iterations 10 [--frozen]     # Q3: d fc8[c] / d image, batch 1
    python -m bench.torch_nets lrn --shape 16,96,55,55 --shape 16,256,27,27  # LRN alone, forward+backward
    python -m bench.torch_nets check                                     # same weights -> same outputs as Caffe
    python -m bench.torch_nets onednn --net alexnet --batch 16           # oneDNN's verbose lines of one iteration

AlexNet is built from tools.alexnet's layer table (CONVS, FC, scaled): grouped
convolutions (groups=2), LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1) (Caffe's LRN divides alpha by
local_size too: x / (k + alpha/n * sum x^2)^beta in both), max pooling 3/2 with Caffe's ceil rounding,
dropout 0.5 after fc6 and fc7. Q1's ConvNet: conv 32x7x7 pad 3 -> ReLU -> max pool 2/2 -> dropout 0.5 ->
fully connected. `check` copies a Caffe net's random weights in and compares the outputs, so "the same
architecture" is tested, not assumed. Every command prints one JSON line.
"""

import argparse
import json

import torch
from torch import nn

from bench.common import threads, timed


class Net(nn.Module):
    def __init__(self, features, classifier):
        super().__init__()
        self.features, self.classifier = features, classifier

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def alexnet(num_classes=1000, width=1.0, crop=227, channels=3) -> Net:
    from tools.alexnet import CONVS, FC, scaled

    layers, c_in = [], channels
    for name, nout, kernel, stride, pad, group, bias in CONVS:
        c_out = scaled(nout, width)
        conv = nn.Conv2d(c_in, c_out, kernel, stride, pad, groups=group)
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.constant_(conv.bias, bias)
        layers += [conv, nn.ReLU(inplace=True)]
        if name in ("conv1", "conv2"):
            layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))
        if name in ("conv1", "conv2", "conv5"):
            layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
        c_in = c_out
    features = nn.Sequential(*layers)
    with torch.no_grad():
        flat = features(torch.zeros(1, channels, crop, crop)).numel()
    fc = scaled(FC, width)
    linears = [nn.Linear(flat, fc), nn.Linear(fc, fc), nn.Linear(fc, num_classes)]
    for lin, std, bias in zip(linears, (0.005, 0.005, 0.01), (0.1, 0.1, 0.0), strict=True):
        nn.init.normal_(lin.weight, std=std)
        nn.init.constant_(lin.bias, bias)
    classifier = nn.Sequential(linears[0], nn.ReLU(inplace=True), nn.Dropout(0.5),
                               linears[1], nn.ReLU(inplace=True), nn.Dropout(0.5), linears[2])
    return Net(features, classifier)


def q1_convnet(num_classes=10, channels=1, size=28, dropout=True) -> Net:
    conv = nn.Conv2d(channels, 32, 7, 1, 3)
    nn.init.kaiming_normal_(conv.weight)
    nn.init.zeros_(conv.bias)
    layers = [conv, nn.ReLU(inplace=True), nn.MaxPool2d(2, 2, ceil_mode=True)]
    if dropout:
        layers.append(nn.Dropout(0.5))
    fc = nn.Linear(32 * (-(-size // 2)) ** 2, num_classes)
    nn.init.xavier_uniform_(fc.weight)
    nn.init.zeros_(fc.bias)
    return Net(nn.Sequential(*layers), fc)


def parametrised(model):
    """The Conv2d and Linear layers in order: what Caffe's Convolution and InnerProduct layers are."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def fwd_bwd(net: str, batch: int, iterations: int, warmup: int) -> dict:
    """Training-mode forward + backward, the work of `caffe time` (dropout on, gradients of every weight)."""
    return timed(fwd_bwd_step(net, batch), iterations, warmup)


def fwd_bwd_step(net: str, batch: int):
    """fwd_bwd's iteration as a function."""
    if net == "alexnet":  # as the deploy with force_backward: the data gradient too
        model = alexnet()
        x = torch.zeros(batch, 3, 227, 227, requires_grad=True)

        def loss_fn(out):
            return out.sum()
    else:
        model = q1_convnet()
        x = torch.zeros(batch, 1, 28, 28)
        labels = torch.zeros(batch, dtype=torch.long)

        def loss_fn(out):
            return nn.functional.cross_entropy(out, labels)
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        x.grad = None
        loss_fn(model(x)).backward()

    return step


def onednn_iteration(net: str, batch: int, warmup: int) -> dict:
    """One forward+backward of fwd_bwd's step after `warmup`, with oneDNN's verbose mode on: oneDNN prints a line
    per primitive it runs (its implementation, e.g. jit:avx512_core, and its ms) to stdout, before the JSON line;
    the caller reads them (frameworks.onednn_profile). Also PyTorch's threading set-up and oneDNN's ISA."""
    import sys

    step = fwd_bwd_step(net, batch)
    for _ in range(warmup):
        step()
    sys.stdout.flush()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        t = timed(step, 1, 0)
    sys.stdout.flush()
    parallel = [line.strip() for line in torch.__config__.parallel_info().splitlines() if ":" in line]
    return {"seconds": t["median"], "parallel_info": parallel}


def input_grad(iterations: int, warmup: int, frozen: bool) -> dict:
    """Q3's step: d fc8[c] / d image for one 227x227 image, eval mode; `frozen`: no weight gradients."""
    torch.manual_seed(0)
    model = alexnet().eval()
    if frozen:
        for p in model.parameters():
            p.requires_grad_(False)
    x = (50 * torch.randn(1, 3, 227, 227)).requires_grad_(True)

    def step():
        model.zero_grad(set_to_none=True)
        x.grad = None
        model(x)[0, 281].backward()
        return x.grad

    return timed(step, iterations, warmup)


def lrn(shapes, iterations: int, warmup: int) -> dict:
    """LocalResponseNorm alone, forward+backward, on each of `shapes` (AlexNet's norm1 and norm2 inputs)."""
    layer = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
    out = {}
    for shape in shapes:
        x = torch.rand(*shape, requires_grad=True)

        def step(x=x):
            x.grad = None
            layer(x).sum().backward()

        out["x".join(map(str, shape))] = timed(step, iterations, warmup)
    return {"shapes": out, "median_total": sum(v["median"] for v in out.values())}


def check() -> dict:
    """Max |Caffe - PyTorch| of the outputs, same random weights and input, TEST phase (no dropout)."""
    import tempfile
    from pathlib import Path

    import caffe
    import numpy as np

    from bench import caffe_nets

    out = {}
    # inputs large enough that LRN's denominator is far from 1 (it is tested, not skipped over)
    cases = {"alexnet_w0.25_crop99": (caffe_nets.alexnet_deploy(2, width=0.25, crop=99, num_classes=5),
                                      alexnet(5, 0.25, 99), (2, 3, 99, 99), 2000.0),
             "q1_dropout": (caffe_nets.q1_input_net("dropout", 2), q1_convnet(), (2, 1, 28, 28), 50.0)}
    rng = np.random.RandomState(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (param, model, shape, scale) in cases.items():
            path = caffe_nets.write(param, Path(tmp) / f"{name}.prototxt")
            net = caffe.Net(str(path), caffe.TEST)
            layers = [layer for layer in net.layers if layer.type in ("Convolution", "InnerProduct")]
            with torch.no_grad():
                for layer, module in zip(layers, parametrised(model), strict=True):
                    module.weight.copy_(torch.from_numpy(layer.blobs[0].data.reshape(module.weight.shape)))
                    module.bias.copy_(torch.from_numpy(layer.blobs[1].data))
            x = (scale * rng.randn(*shape)).astype(np.float32)
            net.blobs["data"].data[...] = x
            net.forward()
            last = [b for b in net.blobs if b.startswith(("fc8", "fc"))][-1]
            expected = net.blobs[last].data.copy()
            model.eval()
            with torch.no_grad():
                got = model(torch.from_numpy(x)).numpy()
            norm1 = net.blobs.get("norm1")
            out[name] = {"max_abs_diff": float(np.abs(got - expected).max()),
                         "max_abs_output": float(np.abs(expected).max()),
                         "relative": float(np.abs(got - expected).max() / np.abs(expected).max())}
            if norm1 is not None:  # how much LRN changed conv1: 0 would mean the check did not exercise it
                conv1 = net.blobs["conv1"].data
                out[name]["lrn_shrink"] = float(1 - np.abs(norm1.data).sum() / np.abs(conv1).sum())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.torch_nets", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fwdbwd")
    f.add_argument("--net", choices=("alexnet", "q1"), required=True)
    f.add_argument("--batch", type=int, required=True)
    g = sub.add_parser("inputgrad")
    g.add_argument("--frozen", action="store_true")
    n = sub.add_parser("lrn")
    n.add_argument("--shape", action="append", required=True, help="N,C,H,W (repeatable)")
    for p in (f, g, n):
        p.add_argument("--iterations", type=int, default=10)
        p.add_argument("--warmup", type=int, default=3)
    sub.add_parser("check")
    o = sub.add_parser("onednn")
    o.add_argument("--net", choices=("alexnet", "q1"), required=True)
    o.add_argument("--batch", type=int, required=True)
    o.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(threads())
    if a.command == "fwdbwd":
        result = fwd_bwd(a.net, a.batch, a.iterations, a.warmup)
    elif a.command == "inputgrad":
        result = input_grad(a.iterations, a.warmup, a.frozen)
    elif a.command == "onednn":
        result = onednn_iteration(a.net, a.batch, a.warmup)
    elif a.command == "lrn":
        result = lrn([tuple(int(v) for v in s.split(",")) for s in a.shape], a.iterations, a.warmup)
    else:
        result = check()
    result = result | {"torch_threads": torch.get_num_threads()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
