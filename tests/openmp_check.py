"""Runs one net with every layer type our OpenMP patches touch and saves what it computes (run by
tests/test_openmp.py in a child process, since OMP_NUM_THREADS is read once, when Caffe loads).

    python tests/openmp_check.py OUT.npz

The net (TEST phase, so that it is deterministic; Dropout is checked apart): a batch of 4 images,
so that convolution runs its images in parallel, through Convolution (grouped, padded), ReLU, LRN
(across channels), max Pooling, Sigmoid, TanH, ELU, BNLL, average Pooling, PReLU, InnerProduct.
It saves the input, every blob, the data gradient of L = sum(output * R) for a fixed R, every
parameter gradient, finite differences of L at sampled pixels, and a TRAIN-phase Dropout mask. Apart:
ReLU's backward pass on a blob large enough for the parallel loop, in place (negative_slope 0) and not
(negative_slope 0.1), on inputs with zeros, signed zeros and NaN (patch 0018 compiles it branch-free); the
Im2col layer (im2col and col2im, patches 0016 and 0019) in strides, paddings and dilations; LRN in a TRAIN and a
TEST net (patch 0023).
"""

import sys
from pathlib import Path

import numpy as np


def build(path: Path):
    import caffe
    from caffe import layers as L
    from caffe import params as P

    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[4, 4, 11, 11]))
    n.conv = L.Convolution(n.data, num_output=8, kernel_size=3, pad=1, group=2, weight_filler=dict(type="gaussian",
                           std=0.3), bias_filler=dict(type="constant", value=0.05))
    n.relu = L.ReLU(n.conv)
    n.norm = L.LRN(n.relu, local_size=3, alpha=0.5, beta=0.75, k=1.0)
    n.maxpool = L.Pooling(n.norm, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.sigmoid = L.Sigmoid(n.maxpool)
    n.tanh = L.TanH(n.maxpool)
    n.elu = L.ELU(n.tanh)
    n.bnll = L.BNLL(n.elu)
    n.avepool = L.Pooling(n.bnll, pool=P.Pooling.AVE, kernel_size=2, stride=1)
    n.prelu = L.PReLU(n.avepool, filler=dict(type="constant", value=0.2))
    n.fc = L.InnerProduct(n.prelu, num_output=5, weight_filler=dict(type="gaussian", std=0.3))
    n.mix = L.Eltwise(n.sigmoid, n.tanh, operation=P.Eltwise.SUM)
    proto = n.to_proto()
    proto.force_backward = True
    path.write_text(str(proto))
    caffe.set_random_seed(7)
    return caffe.Net(str(path), caffe.TEST)


def loss_and_grad(net, x, weights):
    """L = sum over outputs of output * R, and dL/dx by Caffe's backward pass."""
    net.blobs["data"].data[...] = x
    net.forward()
    loss = sum(float((net.blobs[name].data * r).sum()) for name, r in weights.items())
    for name, r in weights.items():
        net.blobs[name].diff[...] = r
    net.backward()
    return loss, net.blobs["data"].diff.copy()


def main(out):
    import caffe

    caffe.set_mode_cpu()
    net = build(Path(out).with_suffix(".prototxt"))
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, net.blobs["data"].data.shape).astype(np.float32)
    weights = {name: rng.uniform(-1, 1, net.blobs[name].data.shape).astype(np.float32) for name in ("fc", "mix")}
    _, grad = loss_and_grad(net, x, weights)
    saved = {"x": x, "grad": grad}
    saved |= {f"blob_{name}": blob.data.copy() for name, blob in net.blobs.items()}
    saved |= {f"param_{name}_{i}": p.diff.copy() for name, ps in net.params.items() for i, p in enumerate(ps)}
    saved |= {f"weight_{name}_{i}": p.data.copy() for name, ps in net.params.items() for i, p in enumerate(ps)}
    # central differences at sampled pixels, in float64 arithmetic on float32 nets: step 1e-2
    coords = [tuple(int(rng.randint(s)) for s in x.shape) for _ in range(60)]
    fd = []
    for c in coords:
        xp, xm = x.copy(), x.copy()
        xp[c] += 1e-2
        xm[c] -= 1e-2
        fd.append((loss_and_grad(net, xp, weights)[0] - loss_and_grad(net, xm, weights)[0]) / 2e-2)
    saved |= {"fd_coords": np.asarray(coords), "fd": np.asarray(fd), "fd_grad": grad[tuple(np.asarray(coords).T)]}
    # Dropout's mask in TRAIN: seeded, so it must not depend on the number of threads
    caffe.set_random_seed(11)
    # 3x8x64x64 = 98,304 values: more than one chunk of the mask
    dnet = one_layer_net(Path(out).with_name("dropout.prototxt"), (3, 8, 64, 64), "Dropout", caffe.TRAIN,
                         dropout_ratio=0.5)
    dnet.blobs["data"].data[...] = 1
    dnet.forward()
    saved["dropout"] = dnet.blobs["top"].data.copy()
    saved |= relu_backward(Path(out).with_name("relu.prototxt"), rng)
    saved |= im2col_layers(Path(out).with_name("im2col.prototxt"), rng)
    saved |= lrn_phases(Path(out).with_name("lrn.prototxt"), rng)
    np.savez(out, **saved)


def one_layer_net(path: Path, shape, layer_type, phase=None, **params):
    """A net of an Input blob `data` of `shape` and one layer of `layer_type` with `params` on it, as blob `top`
    (in place: into `data`), with force_backward, written to `path`."""
    import caffe
    from caffe import layers as L

    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(shape)))
    n.top = getattr(L, layer_type)(n.data, **params)
    proto = n.to_proto()
    proto.force_backward = True
    path.write_text(str(proto))
    return caffe.Net(str(path), caffe.TEST if phase is None else phase)


def forward_backward(net, x, top_diff, top="top"):
    """Forward `x` from `data`, backward `top_diff` from `top`; the net's blobs hold the results."""
    net.blobs["data"].data[...] = x
    net.forward()
    net.blobs[top].diff[...] = top_diff
    net.backward()


def relu_backward(path: Path, rng) -> dict:
    """ReLU's data gradient for a given top gradient: in place with negative_slope 0 (as in Caffe's nets), and
    into a blob of its own with negative_slope 0.1. 2x16x32x32 = 32,768 values: the parallel loop."""
    shape = (2, 16, 32, 32)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[::7] = 0.0
    flat[3::11] = -0.0
    flat[5::101] = np.nan
    top_diff = rng.uniform(-1, 1, shape).astype(np.float32)
    out = {"relu_x": x, "relu_top_diff": top_diff}
    for key, slope, in_place in (("relu", 0.0, True), ("leaky", 0.1, False)):
        net = one_layer_net(path, shape, "ReLU", negative_slope=slope, in_place=in_place)
        forward_backward(net, x, top_diff, top="data" if in_place else "top")
        # in place, the bottom holds ReLU's output, which its backward pass reads
        out[f"{key}_bottom_data"] = net.blobs["data"].data.copy()
        out[f"{key}_grad"] = net.blobs["data"].diff.copy()
    return out


# (name, input shape, convolution_param) for the Im2col layer, which runs im2col_cpu forward and col2im_cpu
# backward, outside any parallel loop (so with 2 threads they share out their rows): AlexNet's conv1 (a strided
# chain, patch 0019), a padded stride-1 chain, stride 2 with padding, a kernel narrower than its stride (no chain),
# dilation (no chain), a rectangular kernel with padding wider than it (whole output columns in the padding)
IM2COL_CASES = (
    ("conv1", (2, 3, 35, 35), dict(kernel_size=11, stride=4)),
    ("pad2", (1, 4, 11, 11), dict(kernel_size=5, pad=2)),
    ("stride2", (2, 2, 13, 12), dict(kernel_size=3, stride=2, pad=1)),
    ("narrow", (1, 3, 14, 14), dict(kernel_size=2, stride=3)),
    ("dilated", (1, 2, 12, 12), dict(kernel_size=3, dilation=2, pad=2)),
    ("rect", (2, 2, 9, 10), dict(kernel_h=3, kernel_w=5, stride_h=1, stride_w=2, pad_h=1, pad_w=6)),
)


def im2col_layers(path: Path, rng) -> dict:
    """Each IM2COL_CASES layer's output and its data gradient for an integer-valued top gradient (so that
    col2im's sums are exact in float32 whatever their order)."""
    out = {}
    for name, shape, conv in IM2COL_CASES:
        net = one_layer_net(path, shape, "Im2col", convolution_param=conv)
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        top_diff = rng.randint(-8, 9, net.blobs["top"].data.shape).astype(np.float32)
        forward_backward(net, x, top_diff)
        out |= {f"im2col_{name}_x": x, f"im2col_{name}_col": net.blobs["top"].data.copy(),
                f"im2col_{name}_top_diff": top_diff, f"im2col_{name}_grad": net.blobs["data"].diff.copy()}
    return out


# Cross-channel LRN of lrn_phases; tests/test_openmp.py computes the same from these
LRN_PARAMS = dict(local_size=5, alpha=0.1, beta=0.75, k=2.0)


def lrn_phases(path: Path, rng) -> dict:
    """Cross-channel LRN's output and data gradient in a TRAIN and in a TEST net (patch 0023 keeps the forward
    pass's powers for backward in TRAIN only), on a batch of 3 (the parallel loop over images)."""
    import caffe

    shape = (3, 7, 6, 5)
    x = rng.uniform(-2, 2, shape).astype(np.float32)
    top_diff = rng.uniform(-1, 1, shape).astype(np.float32)
    out = {"lrn_x": x, "lrn_top_diff": top_diff}
    for phase, name in ((caffe.TRAIN, "train"), (caffe.TEST, "test")):
        net = one_layer_net(path, shape, "LRN", phase, **LRN_PARAMS)
        forward_backward(net, x, top_diff)
        out |= {f"lrn_{name}_top": net.blobs["top"].data.copy(), f"lrn_{name}_grad": net.blobs["data"].diff.copy()}
    return out


if __name__ == "__main__":
    main(sys.argv[1])
