"""The Caffe that `make setup` built is real: pycaffe gradients, the binary trains and resumes,
data layers transform and decode images, and Python layers load."""

import re
import subprocess
import threading
import time

import caffe
import numpy as np
import pytest
from caffe import layers as L
from caffe import params as P
from conftest import write_prototxt
from PIL import Image

from tools import caffe_runner, paths
from tools.parse_log import parse_log
from tools.solver import make_solver, write_solver


def small_convnet(data, label, num_classes=4, dropout=True, filters=3):
    n = caffe.NetSpec()
    n.data, n.label = data, label
    n.conv = L.Convolution(n.data, num_output=filters, kernel_size=3, pad=1,
                           weight_filler=dict(type="gaussian", std=0.3), bias_filler=dict(type="constant", value=0.1))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.pool = L.Pooling(n.relu, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    if dropout:
        n.drop = L.Dropout(n.pool, dropout_ratio=0.5, in_place=True)
    n.fc = L.InnerProduct(n.pool, num_output=num_classes, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.fc, n.label)
    return n.to_proto()


def test_data_gradient_matches_finite_differences(tmp_path, rng):
    proto = small_convnet(L.Input(shape=dict(dim=[2, 1, 8, 8])), L.Input(shape=dict(dim=[2])))
    proto.force_backward = True
    caffe.set_random_seed(3)
    net = caffe.Net(str(write_prototxt(tmp_path / "net.prototxt", proto)), caffe.TEST)  # dropout: identity
    x = rng.randn(2, 1, 8, 8).astype(np.float32)
    net.blobs["label"].data[...] = [1, 3]

    def loss(v):
        net.blobs["data"].data[...] = v
        return float(net.forward()["loss"])

    f0 = loss(x)
    net.backward()
    analytic = net.blobs["data"].diff.copy()
    eps, numeric, smooth = 5e-4, np.zeros_like(x), np.ones(x.shape, bool)
    for i in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[i] += eps
        lo[i] -= eps
        f_hi, f_lo = loss(hi), loss(lo)
        numeric[i] = (f_hi - f_lo) / (2 * eps)
        # Like Caffe's GradientChecker: skip points where a ReLU or max-pool switch lies within eps.
        smooth[i] = abs((f_hi - f0) - (f0 - f_lo)) < 0.02 * abs(f_hi - f_lo) + 2e-6
    assert smooth.mean() > 0.9, "too many kinks for a meaningful check"
    assert np.abs(analytic).max() > 1e-3, "gradient should not vanish"
    np.testing.assert_allclose(analytic[smooth], numeric[smooth], rtol=2e-2, atol=5e-4)


def train_val(train_src, test_src, path):
    n = caffe.NetSpec()
    n.data, n.label = L.Data(source=str(train_src), backend=P.Data.LMDB, batch_size=50, ntop=2,
                             transform_param=dict(scale=1 / 255), include=dict(phase=caffe.TRAIN))
    train_data = n.to_proto()
    n = caffe.NetSpec()
    n.data, n.label = L.Data(source=str(test_src), backend=P.Data.LMDB, batch_size=100, ntop=2,
                             transform_param=dict(scale=1 / 255), include=dict(phase=caffe.TEST))
    body = small_convnet(n.data, n.label, 10, dropout=False, filters=16)
    body.layer.insert(0, train_data.layer[0])
    return write_prototxt(path, body)


@pytest.mark.slow
def test_caffe_binary_trains_snapshots_and_resumes(tmp_path, small_lmdb):
    net = train_val(small_lmdb / "train_lmdb", small_lmdb / "test_lmdb", tmp_path / "train_val.prototxt")
    solver = write_solver(make_solver(
        net=str(net), base_lr=0.01, momentum=0.9, lr_policy="fixed", max_iter=40, display=2,
        test_iter=[2], test_interval=20, snapshot=20, snapshot_prefix=str(tmp_path / "snap"), random_seed=1,
        solver_mode="CPU"), tmp_path / "solver.prototxt")
    caffe_runner.run(["train", f"-solver={solver}"], tmp_path / "train.log", progress=False)
    losses = [r["loss"] for r in parse_log(tmp_path / "train.log").train]
    assert len(losses) >= 20
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses
    assert (tmp_path / "snap_iter_20.solverstate").exists() and (tmp_path / "snap_iter_40.caffemodel").exists()

    caffe_runner.run(["train", f"-solver={solver}", f"-snapshot={tmp_path / 'snap_iter_20.solverstate'}"],
                     tmp_path / "resume.log", progress=False)
    text = (tmp_path / "resume.log").read_text()
    assert "Resuming from" in text
    iters = [int(m) for m in re.findall(r"Iteration (\d+) \(", text)]
    assert min(iters) >= 20 and max(iters) >= 38, iters


def test_data_layer_transform_center_crop_and_random_crops(tmp_path, fashion):
    from tools.lmdb_io import write_arrays

    image = fashion.train_images[:1]  # 1x1x28x28
    write_arrays(tmp_path / "one_lmdb", np.repeat(image, 4, axis=0), [0] * 4)
    nets = {}
    for phase in ("TRAIN", "TEST"):
        # Caffe mirrors in any phase when `mirror: true`, so (like BVLC's nets) only TRAIN asks for it.
        tp = dict(mirror=phase == "TRAIN", crop_size=20, mean_value=[100.0], scale=0.5)
        n = caffe.NetSpec()
        n.data = L.Data(source=str(tmp_path / "one_lmdb"), backend=P.Data.LMDB, batch_size=16, ntop=1,
                        transform_param=tp)
        n.out = L.Flatten(n.data)
        nets[phase] = caffe.Net(str(write_prototxt(tmp_path / f"{phase}.prototxt", n.to_proto())),
                                getattr(caffe, phase))
    expected = (image[0, :, 4:24, 4:24].astype(np.float32) - 100.0) * 0.5  # (28 - 20) / 2 = 4
    nets["TEST"].forward()
    test_batch = nets["TEST"].blobs["data"].data
    assert test_batch.shape == (16, 1, 20, 20)
    for item in test_batch:
        np.testing.assert_array_equal(item, expected)

    crops = set()
    for _ in range(3):
        nets["TRAIN"].forward()
        for item in nets["TRAIN"].blobs["data"].data:
            crops.add(item.tobytes())
            # every TRAIN item is some 20x20 window of the image, maybe mirrored, mean and scale applied
            raw = item / 0.5 + 100.0
            assert raw.min() >= 0 and raw.max() <= 255
    assert len(crops) > 8, "TRAIN crops/mirrors should vary"


def test_image_data_layer_reads_jpegs_in_bgr(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24, 0] = 250  # left half red
    rgb[:, 24:, 2] = 250  # right half blue
    listing = []
    for i in range(3):
        Image.fromarray(rgb).save(tmp_path / f"img{i}.jpg", quality=95)
        listing.append(f"img{i}.jpg {i}")
    (tmp_path / "list.txt").write_text("\n".join(listing) + "\n")
    n = caffe.NetSpec()
    n.data, n.label = L.ImageData(source=str(tmp_path / "list.txt"), root_folder=str(tmp_path) + "/",
                                  batch_size=3, new_height=32, new_width=48, ntop=2)
    net = caffe.Net(str(write_prototxt(tmp_path / "net.prototxt", n.to_proto())), caffe.TEST)
    net.forward()
    data = net.blobs["data"].data
    assert data.shape == (3, 3, 32, 48)
    assert list(net.blobs["label"].data) == [0, 1, 2]
    # OpenCV decodes to BGR: channel 2 is red on the left, channel 0 is blue on the right
    assert data[0, 2, :, :20].mean() > 200 and data[0, 0, :, :20].mean() < 30
    assert data[0, 0, :, 28:].mean() > 200 and data[0, 2, :, 28:].mean() < 30


def image_data_transform_candidates(bgr, crop, mean, scale):
    """Every output DataTransformer may give for one image (H x W x C bytes, as OpenCV reads it): each crop offset,
    mirrored or not, with Caffe's float arithmetic (pixel - mean) * scale; mean is per channel or a C x H x W
    image. Returns {(h_off, w_off, mirrored): C x crop x crop float32}."""
    h, w, _ = bgr.shape
    chw = bgr.transpose(2, 0, 1).astype(np.float32)
    full = (chw - np.asarray(mean, np.float32).reshape(-1, 1, 1) if np.ndim(mean) == 1 else chw - mean) \
        * np.float32(scale)
    return {(i, j, m): (out[:, :, ::-1] if m else out) for i in range(h - crop + 1) for j in range(w - crop + 1)
            for m in (False, True) for out in [full[:, i:i + crop, j:j + crop]]}


@pytest.mark.parametrize("mean", ["values", "file", "none"])
def test_image_data_transform_is_caffes_arithmetic_to_the_bit(tmp_path, rng, mean):
    """Patch 0022 writes ImageData's crop, mirror, mean and scale row by row: every image of several TRAIN batches
    must be, bit for bit, one of the crops (at some offset, mirrored or not) that the definition allows, both
    mirrored and plain ones must occur, and in TEST the centre crop; for colour and grey PNGs."""
    for color in (True, False):
        channels = 3 if color else 1
        images = rng.randint(0, 256, (6, 13, 17, channels)).astype(np.uint8)
        for i, img in enumerate(images):
            Image.fromarray(img if color else img[:, :, 0]).save(tmp_path / f"{color}{i}.png")
        (tmp_path / f"{color}.txt").write_text("".join(f"{color}{i}.png {i}\n" for i in range(len(images))))
        bgr = images[:, :, :, ::-1]  # OpenCV's channel order
        transform = dict(crop_size=9, mirror=True, scale=0.25)
        if mean == "values":
            means = [11.5, 100.25, 3.0][:channels]
            transform["mean_value"] = means
        elif mean == "file":
            means = rng.uniform(0, 255, (channels, 13, 17)).astype(np.float32)
            blob = caffe.io.array_to_blobproto(means[None])
            (tmp_path / f"{color}.binaryproto").write_bytes(blob.SerializeToString())
            transform["mean_file"] = str(tmp_path / f"{color}.binaryproto")
        else:
            means = [0.0] * channels
        candidates = [image_data_transform_candidates(image, 9, means, 0.25) for image in bgr]
        seen = set()
        for phase in (caffe.TRAIN, caffe.TEST):
            n = caffe.NetSpec()
            n.data, n.label = L.ImageData(source=str(tmp_path / f"{color}.txt"), root_folder=str(tmp_path) + "/",
                                          batch_size=3, is_color=color, transform_param=transform, ntop=2)
            net = caffe.Net(str(write_prototxt(tmp_path / "net.prototxt", n.to_proto())), phase)
            for _ in range(8 if phase == caffe.TRAIN else 2):
                net.forward()
                for out, label in zip(net.blobs["data"].data, net.blobs["label"].data, strict=True):
                    found = [key for key, want in candidates[int(label)].items() if want.tobytes() == out.tobytes()]
                    assert found, f"image {int(label)} ({mean}, colour {color}): no allowed crop gives this output"
                    if phase == caffe.TEST:  # the centre crop (Caffe mirrors in TEST too when asked to)
                        assert any(key[:2] == (2, 4) for key in found), found
                    seen.add(found[0][2])
        assert seen == {False, True}, "both mirrored and plain crops occurred"


PY_LAYER = '''
import caffe


class Double(caffe.Layer):
    def setup(self, bottom, top):
        self.factor = float(self.param_str or 2)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.factor * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = self.factor * top[0].diff
'''


def test_python_layer_in_pycaffe_and_in_the_binary(tmp_path, monkeypatch):
    (tmp_path / "double_layer.py").write_text(PY_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3]))
    n.out = L.Python(n.data, module="double_layer", layer="Double", param_str="3")
    proto = write_prototxt(tmp_path / "net.prototxt", n.to_proto())
    net = caffe.Net(str(proto), caffe.TEST)
    net.blobs["data"].data[...] = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(net.forward()["out"], 3 * np.arange(6).reshape(2, 3))

    # The binary embeds its own interpreter: the runner's environment must let it import the layer.
    timing = caffe_runner.time_net(proto, tmp_path / "time.log", iterations=2, pythonpath=[tmp_path])
    # the binary ran the Python layer itself: `caffe time` reports its forward and backward, and took time
    assert timing["layers"]["out"]["forward"] > 0 and timing["layers"]["out"]["backward"] > 0


@pytest.mark.skipif("0024-" not in paths.build_info().get("patches", ""), reason="a build without patch 0024 "
                    "(CAFFE_OPENMP=0, stock pycaffe) holds the GIL through its passes")
def test_pycaffe_lets_other_python_threads_run_during_forward_and_backward(tmp_path, monkeypatch):
    """Patch 0024: Net.forward and Net.backward run without Python's GIL, so a Python thread (Q2's extraction decodes
    the next batch in one) runs meanwhile; a Python layer and the callbacks in that net take the GIL back.

    A thread counts while the net convolves; callbacks before and after the convolution (Python, so they need the
    GIL too) read the count. Holding the GIL through the convolution, as stock pycaffe does, lets the counter run
    only where a callback hands it a time slice (5 ms), a few percent of the convolution's time (measured: 0.04-0.14
    of its rate alone, on a convolution of 70 ms); released, it counts at a good part of the rate it reaches alone
    (0.66-1.0)."""
    (tmp_path / "double_layer.py").write_text(PY_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[32, 3, 128, 128]))  # a convolution of about 0.15 s
    n.conv = L.Convolution(n.data, num_output=96, kernel_size=7, weight_filler=dict(type="gaussian", std=0.01))
    n.out = L.Python(n.conv, module="double_layer", layer="Double", param_str="2")
    proto = n.to_proto()
    proto.force_backward = True
    net = caffe.Net(str(write_prototxt(tmp_path / "net.prototxt", proto)), caffe.TEST)
    net.blobs["data"].data[...] = np.random.RandomState(0).uniform(-1, 1, net.blobs["data"].data.shape)
    ticks, stop, marks = [0], threading.Event(), {}

    def mark(name):
        return lambda layer: marks.setdefault(name, []).append((layer, ticks[0], time.perf_counter()))

    net.before_forward(mark("before_forward"))
    net.after_forward(mark("after_forward"))
    net.before_backward(mark("before_backward"))
    net.after_backward(mark("after_backward"))

    def count():
        while not stop.is_set():
            ticks[0] += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        start, t0 = ticks[0], time.perf_counter()
        time.sleep(0.3)
        alone = (ticks[0] - start) / (time.perf_counter() - t0)  # the counter's rate with the GIL to itself
        net.forward()
        net.blobs["out"].diff[...] = 1
        net.backward()
    finally:
        stop.set()
        counter.join()
    conv = list(net._layer_names).index("conv")
    rates = {}
    for name, (begin, end) in {"forward": ("before_forward", "after_forward"),
                               "backward": ("before_backward", "after_backward")}.items():
        (_, ticks_0, time_0), = [m for m in marks[begin] if m[0] == conv]
        (_, ticks_1, time_1), = [m for m in marks[end] if m[0] == conv]
        rates[name] = (ticks_1 - ticks_0) / (time_1 - time_0) / alone
    assert min(rates.values()) > 0.3, f"the counter's rate while the convolution runs, over its rate alone: {rates}"
    assert [m[0] for m in marks["before_forward"]] == [0, 1, 2], "the callbacks ran for every layer"
    np.testing.assert_array_equal(net.blobs["out"].data, 2 * net.blobs["conv"].data)
    np.testing.assert_array_equal(net.blobs["conv"].diff, 2 * net.blobs["out"].diff)


def test_tools_are_installed():
    for tool in ("caffe", "compute_image_mean", "convert_imageset", "upgrade_net_proto_text"):
        assert paths.caffe_tool(tool).exists()
    out = subprocess.run([paths.caffe_tool("caffe"), "--version"], capture_output=True, text=True)
    assert "caffe version 1.0.0" in out.stdout


@pytest.mark.parametrize("bad", ["layer { type: 'NoSuchLayer' name: 'x' top: 'x' }", "layer { nonsense"])
def test_runner_quotes_caffe_fatal_line(tmp_path, bad):
    (tmp_path / "bad.prototxt").write_text(bad)
    with pytest.raises(caffe_runner.CaffeError) as e:
        caffe_runner.time_net(tmp_path / "bad.prototxt", tmp_path / "bad.log", iterations=1)
    msg = str(e.value)
    assert "log:" in msg and str(tmp_path / "bad.log") in msg
    assert ("Unknown layer type" in msg) or ("Error parsing text-format" in msg) or ("Check failed" in msg), msg
