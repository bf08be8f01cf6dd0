"""Caffe's CPU layers in parallel (the OpenMP patches, tools/setup/patches/001*-openmp-*.patch).

What the patches must not change: the numbers. A net with every patched layer type runs in a child
process with 1 and with 2 threads (tests/openmp_check.py): outputs and data gradients must agree to
float rounding, the weight gradients (summed per thread, then added) to float summation order. Its
forward pass is checked against numpy (known answers) and its backward pass against finite
differences; the seeded Dropout mask must not depend on the thread count. Then real training: Q1's
net with the `caffe` binary, 1 and 2 threads, must end at the same loss within a stated tolerance.
On a build without OpenMP (CAFFE_OPENMP=0) the same checks hold trivially and still run.
"""

import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from tools import caffe_runner, paths
from tools.parse_log import parse_log

pytestmark = pytest.mark.slow  # trains or runs Caffe at length: not in `make test-fast`

CHECK = REPO / "tests" / "openmp_check.py"


def run_check(tmp_path, threads: int) -> dict:
    out = tmp_path / f"threads{threads}" / "out.npz"
    out.parent.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOG_minloglevel": "2"}
    proc = subprocess.run([sys.executable, str(CHECK), str(out)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(np.load(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openmp")
    return run_check(tmp, 1), run_check(tmp, 2)


def test_the_build_is_what_setup_says():
    """The default build links OpenMP (libgomp); CAFFE_OPENMP=0 builds stock Caffe, which does not."""
    lib = paths.libcaffe()
    linked = subprocess.run(["ldd", str(lib)], capture_output=True, text=True).stdout
    openmp = paths.build_info().get("openmp", "0") == "1"
    assert ("libgomp" in linked) == openmp, linked
    if openmp:  # BLAS built for OpenMP: single-threaded inside the layers' parallel loops
        # (in a wheel, auditwheel renamed the bundled copy: that one must itself link libgomp)
        blas = re.search(r"(\S*libopenblas\S*) => (\S+)", linked)
        assert blas, linked
        blas_links = subprocess.run(["ldd", blas.group(2)], capture_output=True, text=True).stdout
        assert "openblas-openmp" in blas.group(2) or "libgomp" in blas_links, (blas.group(2), blas_links)


def test_one_and_two_threads_compute_the_same(runs):
    one, two = runs
    for key in one:
        if key.startswith("param_conv_0"):
            # the weight gradient sums over images per thread, then over threads: summation order only
            np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_allclose(two[key], one[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_backward_matches_finite_differences(runs):
    _, two = runs
    fd, grad = two["fd"], two["fd_grad"]
    # central differences with a step of 1e-2 in float32: O(1e-3) error, more where a max-pool window's
    # winner or a ReLU's sign changes inside the step; at most a few such pixels of the 60
    close = np.abs(fd - grad) <= 5e-3 + 2e-2 * np.abs(grad)
    assert close.mean() >= 0.9, list(zip(fd[~close], grad[~close], strict=True))
    assert np.abs(grad).max() > 1e-2, "the gradient reaches the data"


def im2col_conv(x, w, b, pad, group):
    n, c, h, wd = x.shape
    out_c, c_per_group, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))).astype(np.float64)
    oh, ow = h + 2 * pad - k + 1, wd + 2 * pad - k + 1
    out = np.zeros((n, out_c, oh, ow))
    per_out = out_c // group
    for o in range(out_c):
        g = o // per_out
        xs = xp[:, g * c_per_group:(g + 1) * c_per_group]
        for i in range(k):
            for j in range(k):
                out[:, o] += np.einsum("nchw,c->nhw", xs[:, :, i:i + oh, j:j + ow], w[o, :, i, j])
        out[:, o] += b[o]
    return out


def lrn_reference(v, local_size, alpha, beta, k):
    """Cross-channel LRN by its definition: v / (k + alpha / n * sum of v^2 over n channels around) ^ beta."""
    half = (local_size - 1) // 2
    sq = np.pad(v ** 2, ((0, 0), (half, local_size - 1 - half), (0, 0), (0, 0)))
    return v * (k + alpha / local_size * sum(sq[:, i:i + v.shape[1]] for i in range(local_size))) ** -beta


def test_forward_known_answers(runs):
    _, two = runs
    conv = im2col_conv(two["x"], two["weight_conv_0"], two["weight_conv_1"], pad=1, group=2)
    np.testing.assert_allclose(two["blob_conv"], conv, rtol=1e-4, atol=1e-5)
    relu = np.maximum(conv, 0)
    np.testing.assert_array_equal(two["blob_relu"], np.maximum(two["blob_conv"], 0))
    assert (two["blob_relu"] == 0).mean() > 0.2, "the ReLU cuts something"
    lrn = lrn_reference(relu, local_size=3, alpha=0.5, beta=0.75, k=1.0)
    np.testing.assert_allclose(two["blob_norm"], lrn, rtol=1e-4, atol=1e-5)
    maxpool = np.stack([[lrn[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(2, 3)) for j in range(5)]
                        for i in range(5)]).transpose(2, 3, 0, 1)
    np.testing.assert_allclose(two["blob_maxpool"], maxpool, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["blob_sigmoid"], 1 / (1 + np.exp(-maxpool)), rtol=1e-5, atol=1e-6)
    tanh = np.tanh(maxpool)
    elu = np.where(tanh > 0, tanh, np.exp(tanh) - 1)
    bnll = np.log1p(np.exp(elu))
    np.testing.assert_allclose(two["blob_bnll"], bnll, rtol=1e-5, atol=1e-6)
    ave = (bnll[:, :, :-1, :-1] + bnll[:, :, 1:, :-1] + bnll[:, :, :-1, 1:] + bnll[:, :, 1:, 1:]) / 4
    np.testing.assert_allclose(two["blob_avepool"], ave, rtol=1e-5, atol=1e-6)


def test_relu_backward_is_stock_arithmetic_to_the_bit(runs):
    """ReLU's backward pass computes top_diff * ((x > 0) + negative_slope * (x <= 0)) in float32, as stock Caffe
    writes it, bit for bit (signed zeros and NaN inputs included), in place or not, with 1 and 2 threads."""
    for got in runs:
        top_diff = got["relu_top_diff"]
        for key, slope in (("relu", 0.0), ("leaky", 0.1)):
            x = got[f"{key}_bottom_data"]
            with np.errstate(invalid="ignore"):
                mask = (x > 0).astype(np.float32) + np.float32(slope) * (x <= 0).astype(np.float32)
            want = top_diff * mask
            assert want.dtype == np.float32
            np.testing.assert_array_equal(got[f"{key}_grad"].view(np.uint32), want.view(np.uint32), err_msg=key)
        assert np.isnan(got["relu_x"]).any() and (np.signbit(got["relu_x"]) & (got["relu_x"] == 0)).any()


def im2col_reference(x, conv):
    """Caffe's column buffer by its definition: row (c, i, j) holds the image at (i * dilation - pad + oh * stride,
    j * dilation - pad + ow * stride), zero outside; and the map from a column-buffer index to an image index."""
    n, c, h, w = x.shape
    kh, kw = conv.get("kernel_h", conv.get("kernel_size")), conv.get("kernel_w", conv.get("kernel_size"))
    sh, sw = conv.get("stride_h", conv.get("stride", 1)), conv.get("stride_w", conv.get("stride", 1))
    ph, pw = conv.get("pad_h", conv.get("pad", 0)), conv.get("pad_w", conv.get("pad", 0))
    d = conv.get("dilation", 1)
    oh, ow = (h + 2 * ph - (d * (kh - 1) + 1)) // sh + 1, (w + 2 * pw - (d * (kw - 1) + 1)) // sw + 1
    ch, i, j, y, z = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), np.arange(oh), np.arange(ow),
                                 indexing="ij")
    rows, cols = i * d - ph + y * sh, j * d - pw + z * sw
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    col = np.where(inside, x[:, ch, rows.clip(0, h - 1), cols.clip(0, w - 1)], 0).reshape(n, c * kh * kw, oh, ow)
    return col, (ch, rows, cols, inside)


def test_im2col_and_col2im_copy_and_add_exactly_what_their_definition_says(runs):
    """Patch 0019 fills strided rows from their neighbours and drops the border tests: the column buffer must hold
    exactly the image's values (or zero) where the definition puts them, and the data gradient the exact sum of the
    column gradients mapped back (integer-valued, so exact in any order), with 1 and 2 threads."""
    from openmp_check import IM2COL_CASES

    for got in runs:
        for name, _, conv in IM2COL_CASES:
            x, top_diff = got[f"im2col_{name}_x"], got[f"im2col_{name}_top_diff"]
            col, (ch, rows, cols, inside) = im2col_reference(x, conv)
            np.testing.assert_array_equal(got[f"im2col_{name}_col"], col, err_msg=name)
            assert (col == 0).any() or name in ("conv1", "narrow"), f"{name}: the case reaches the padding"
            grad = np.zeros_like(x)
            for n in range(x.shape[0]):
                np.add.at(grad[n], (ch[inside], rows[inside], cols[inside]), top_diff[n].reshape(ch.shape)[inside])
            np.testing.assert_array_equal(got[f"im2col_{name}_grad"], grad, err_msg=name)


def test_lrn_in_training_keeps_its_powers_without_changing_a_bit(runs):
    """Patch 0023: a TRAIN net's LRN reuses the forward pass's scale ^ -beta in its backward pass; a TEST net
    computes it again. Both must give the same top and data gradient to the bit, with 1 and 2 threads, and that
    gradient must be LRN's (finite differences of sum(top * R) in float64 numpy)."""
    for got in runs:
        for key in ("top", "grad"):
            np.testing.assert_array_equal(got[f"lrn_train_{key}"].view(np.uint32),
                                          got[f"lrn_test_{key}"].view(np.uint32), err_msg=key)
    from openmp_check import LRN_PARAMS

    x, r = runs[0]["lrn_x"].astype(np.float64), runs[0]["lrn_top_diff"].astype(np.float64)

    def lrn(v):
        return lrn_reference(v, **LRN_PARAMS)

    np.testing.assert_allclose(runs[0]["lrn_train_top"], lrn(x), rtol=1e-5, atol=1e-6)
    for c in [(0, 0, 0, 0), (1, 3, 2, 4), (2, 6, 5, 1), (1, 1, 3, 0)]:
        step = np.zeros_like(x)
        step[c] = 1e-4
        fd = ((lrn(x + step) * r).sum() - (lrn(x - step) * r).sum()) / 2e-4
        assert abs(runs[0]["lrn_train_grad"][c] - fd) <= 1e-4 + 1e-3 * abs(fd), (c, runs[0]["lrn_train_grad"][c], fd)


def test_dropout_mask_is_seeded_not_threaded(runs):
    one, two = runs
    np.testing.assert_array_equal(one["dropout"], two["dropout"])
    kept = two["dropout"] != 0
    assert set(np.unique(two["dropout"])) == {0.0, 2.0}  # kept values are scaled by 1 / (1 - ratio)
    assert abs(kept.mean() - 0.5) < 0.01  # 98,304 draws: 0.5 within about 3 standard deviations


def test_q1_training_with_one_and_two_threads_ends_at_the_same_loss(tmp_path, fashion):
    """60 iterations of Q1's dropout net with the `caffe` binary: every logged loss within 1e-3 (relative)."""
    from q1_dropout_augment import nets
    from tools import lmdb_io
    from tools.datasets import stratified_subset

    spec = dataclasses.replace(nets.DATASETS["fashion-mnist"], train_count=200, val_count=100, max_iter=60,
                               test_interval=60)
    root = tmp_path / spec.root
    tr = stratified_subset(fashion.train_labels, 20, seed=0)
    va = stratified_subset(fashion.test_labels, 10, seed=0)
    lmdb_io.write_arrays(root / "train_subset_lmdb", fashion.train_images[tr], fashion.train_labels[tr])
    lmdb_io.compute_mean(root / "train_subset_lmdb", root / "train_subset_mean.binaryproto")
    net = nets.train_val(spec, "dropout")
    for source in {layer.data_param.source for layer in net.layer if layer.type == "Data"}:
        if not (tmp_path / source).exists():  # the validation LMDB(s) the TEST nets read
            lmdb_io.write_arrays(tmp_path / source, fashion.test_images[va], fashion.test_labels[va])
    losses = {}
    for threads in (1, 2):
        folder = nets.write(spec, "dropout", tmp_path, f"models/t{threads}", run_folder=f"runs/t{threads}")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            caffe_runner.train(folder / "solver.prototxt", tmp_path / f"runs/t{threads}.log", cwd=tmp_path,
                               progress=False)
        finally:
            del os.environ["OMP_NUM_THREADS"]
        losses[threads] = [row["loss"] for row in parse_log(tmp_path / f"runs/t{threads}.log").train]
    assert len(losses[1]) == len(losses[2]) >= 3
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-3)


def test_stock_build_has_its_own_key_patches_and_flags():
    setup = REPO / "tools" / "setup"

    def common(call, **env):
        return subprocess.run(["bash", "-c", f"source {setup}/common.sh; {call}"], capture_output=True, text=True,
                              env={**os.environ, **env}, check=True).stdout

    openmp, stock = (common(f"build_key {sys.executable}", CAFFE_OPENMP=v).strip() for v in ("1", "0"))
    assert openmp.endswith("-cpu") and stock.endswith("-cpu-stock")
    assert openmp.split("-")[4] != stock.split("-")[4], "the patch set and the flags are the recipe"
    patches = {v: common("caffe_patches", CAFFE_OPENMP=v).split() for v in ("1", "0")}
    assert [p for p in patches["1"] if "-openmp-" not in p] == patches["0"]
    assert len(patches["1"]) - len(patches["0"]) == len(list(setup.glob("patches/*-openmp-*.patch"))) >= 8
    assert "-DUSE_OPENMP=ON" in common("caffe_cmake_flags", CAFFE_OPENMP="1")
    assert "USE_OPENMP" not in common("caffe_cmake_flags", CAFFE_OPENMP="0")
