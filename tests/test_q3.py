"""Q3 (q3_visualize_break): input gradients against finite differences, class visualisation, saliency,
fooling, the committed deploys and notebooks, the notebooks run end to end, and clear errors.

The nets are real pycaffe nets: a smooth one built here (exact finite differences), and a tiny AlexNet
from the same generator as the committed deploys, with random He-initialised weights saved as a
model card (what `make demo` writes for the trained one).
"""

import json
import os
import subprocess
import sys

import caffe
import nbformat
import numpy as np
import pytest
from caffe import layers as L
from caffe import params as P
from caffe.proto import caffe_pb2
from conftest import REPO, write_prototxt
from google.protobuf import text_format

from q3_visualize_break import deploys, loading, run_notebooks
from q3_visualize_break.class_model import ascent_step, class_model_visualization
from q3_visualize_break.fooling import evaluate_fooling, fooling_image, fooling_step, minimal_pgd, pgd_attack
from q3_visualize_break.gradients import (
    Objective,
    class_score,
    cross_entropy,
    forward_scores,
    input_gradient,
    l2,
    softmax,
    top_k,
)
from q3_visualize_break.images import as_rgb
from q3_visualize_break.regularisers import clip_around
from q3_visualize_break.saliency import overlay, randomized_weights, rank_correlation, saliency_map
from tools import device, paths
from tools.transform import pixel_bounds

TINY_CLASSES = ["T-shirt/top", "Trouser", "Sandal", "Bag"]


def smooth_net(tmp_path, classes=4):
    """conv -> tanh -> average pool -> fc -> tanh -> fc: differentiable everywhere, so finite differences
    match the backward pass at every pixel."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 10, 10]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1, weight_filler=dict(type="xavier"),
                           bias_filler=dict(type="constant", value=0.1))
    n.act = L.TanH(n.conv)
    n.pool = L.Pooling(n.act, pool=P.Pooling.AVE, kernel_size=2, stride=2)
    n.fc7 = L.InnerProduct(n.pool, num_output=16, weight_filler=dict(type="xavier"))
    n.act7 = L.TanH(n.fc7)
    n.fc8 = L.InnerProduct(n.act7, num_output=classes, weight_filler=dict(type="xavier"))
    proto = n.to_proto()
    proto.force_backward = True
    caffe.set_random_seed(5)
    return caffe.Net(str(write_prototxt(tmp_path / "smooth.prototxt", proto)), caffe.TEST)


def he_init(net, rng, last="fc8"):
    for blobs in net.params.values():
        w = blobs[0].data
        w[...] = rng.randn(*w.shape) * np.sqrt(2.0 / np.prod(w.shape[1:]))
        blobs[1].data[...] = 0
    net.params[last][0].data[...] *= 0.05  # scores of a few units, not hundreds: a softmax that is not saturated


@pytest.fixture(scope="module")
def tiny_card(tmp_path_factory):
    """A model card for a tiny AlexNet (width 0.05, 67x67 input, 4 classes) with random weights."""
    root = tmp_path_factory.mktemp("tiny_model")
    caffe.set_mode_cpu()
    text = deploys.gradients_deploy_text(width=0.05, crop=67, num_classes=len(TINY_CLASSES))
    net = caffe.Net(str(write_prototxt(root / "deploy.prototxt", text)), caffe.TEST)
    he_init(net, np.random.RandomState(0))
    net.save(str(root / "tiny.caffemodel"))
    card = dict(name="tiny", weights=str(root / "tiny.caffemodel"), classes=TINY_CLASSES, width=0.05, crop=67,
                channels=3, mean_value=[70.0, 72.0, 74.0], raw_scale=255, description="a tiny AlexNet, random weights")
    (root / "model.json").write_text(json.dumps(card))
    return root / "model.json"


@pytest.fixture(scope="module")
def tiny(tiny_card):
    return loading.load_model(str(tiny_card))


@pytest.fixture(scope="module")
def pictures(fashion):
    return [as_rgb(fashion.test_images[i, 0]) for i in range(4)]


# ---- gradients against finite differences -------------------------------------------------------------------


def test_saliency_equals_finite_differences_on_a_smooth_net(tmp_path, rng):
    net = smooth_net(tmp_path)
    x = rng.randn(3, 10, 10).astype(np.float32)
    c = 2
    eps = 1e-2
    numeric = np.zeros_like(x, dtype=np.float64)
    for i in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[i] += eps
        lo[i] -= eps
        numeric[i] = (forward_scores(net, hi)[c] - forward_scores(net, lo)[c]) / (2 * eps)
    _, grad, _ = input_gradient(net, x, class_score(c))
    np.testing.assert_allclose(grad, numeric, rtol=1e-2, atol=2e-4)
    sal = saliency_map(net, x, c)
    assert sal.shape == (10, 10)
    np.testing.assert_allclose(sal, np.abs(numeric).max(axis=0), rtol=1e-2, atol=2e-4)
    assert sal.max() > 1e-2


def test_composed_objectives_add_and_scale_values_and_gradients_as_finite_differences_say(tmp_path, rng):
    """class_score(c) - 0.5 * cross_entropy(t) - 0.01 * l2(x0): the score parts go back through the net, the
    image part is added; the composed gradient must equal the difference quotient of the composed value."""
    net = smooth_net(tmp_path)
    x, x0 = rng.randn(3, 10, 10).astype(np.float32), rng.randn(3, 10, 10).astype(np.float32)
    objective = class_score(2) - 0.5 * cross_entropy(1) - 0.01 * l2(x0)
    assert isinstance(objective, Objective) and "class_score(2)" in repr(objective)

    def value(image):
        s = forward_scores(net, image)
        return s[2] - 0.5 * -np.log(softmax(s)[1]) - 0.01 * np.sum((image.astype(np.float64) - x0) ** 2)

    got, grad, _ = input_gradient(net, x, objective)
    assert got == pytest.approx(value(x), rel=1e-5)
    eps, numeric = 1e-2, np.zeros_like(x, dtype=np.float64)
    for i in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[i] += eps
        lo[i] -= eps
        numeric[i] = (value(hi) - value(lo)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-2, atol=2e-4)
    # the algebra itself: negation, subtraction, scaling on either side, and 0-gradient parts
    scores = rng.randn(4)
    for composed, parts in ((-class_score(1), (-1, 0)), (2 * class_score(1) - class_score(3), (2, -1)),
                            (class_score(3) * 3 + class_score(1), (1, 3))):
        v, d_scores, d_image = composed(scores, x)
        assert v == pytest.approx(parts[0] * scores[1] + parts[1] * scores[3]) and np.all(d_image == 0)
        np.testing.assert_allclose(d_scores, [0, parts[0], 0, parts[1]])
    with pytest.raises(TypeError):
        class_score(1) + 1.0  # a constant has no gradient to add: not an objective


def test_saliency_matches_finite_differences_through_relu_and_max_pooling(tiny, pictures):
    """The tiny AlexNet has ReLU and max-pool kinks, and float32 scores: check the 200 pixels the score is
    most sensitive to (where the difference quotient stands clear of rounding), skipping kinks."""
    net, x = tiny.net, tiny.preprocess(pictures[1])
    c = int(np.argmax(forward_scores(net, x)))
    _, grad, _ = input_gradient(net, x, class_score(c))
    sal = saliency_map(net, x, c)
    np.testing.assert_array_equal(sal, np.abs(grad).max(axis=0))
    f0, eps, errors = forward_scores(net, x)[c], 0.1, []
    for flat in np.argsort(-np.abs(grad).ravel())[:200]:
        i = np.unravel_index(flat, x.shape)
        hi, lo = x.copy(), x.copy()
        hi[i] += eps
        lo[i] -= eps
        f_hi, f_lo = forward_scores(net, hi)[c], forward_scores(net, lo)[c]
        # Like Caffe's GradientChecker: skip points where a ReLU or max-pool switch lies within eps.
        if abs((f_hi - f0) - (f0 - f_lo)) <= 0.02 * abs(f_hi - f_lo) + 1e-6:
            errors.append(abs((f_hi - f_lo) / (2 * eps) - grad[i]) / abs(grad[i]))
    assert len(errors) > 150, "too many kinks for a meaningful check"
    assert np.median(errors) < 0.01 and np.percentile(errors, 95) < 0.05, np.percentile(errors, [50, 95, 100])
    assert np.abs(grad).max() > 1e-4


# ---- class model visualisation, fooling ------------------------------------------------------------------------


def test_class_visualization_raises_the_score_and_l2_holds_the_norm(tiny):
    common = dict(iterations=40, learning_rate=2.0, jitter=1, blur_every=4, blur_sigma=0.5, bounds=tiny.bounds, seed=3)
    with_l2 = class_model_visualization(tiny.net, 1, l2_decay=0.05, **common)
    without = class_model_visualization(tiny.net, 1, l2_decay=0.0, **common)
    assert len(with_l2.scores) == len(with_l2.norms) == 40
    assert with_l2.scores[-5:].mean() > with_l2.scores[0] + 1.0, with_l2.scores
    assert forward_scores(tiny.net, with_l2.image)[1] > with_l2.scores[0] + 1.0
    assert with_l2.norms[-1] < 0.8 * without.norms[-1], (with_l2.norms[-1], without.norms[-1])
    low, high = tiny.bounds
    assert np.all(with_l2.image >= low - 1e-4) and np.all(with_l2.image <= high + 1e-4)
    again = class_model_visualization(tiny.net, 1, l2_decay=0.05, **common)
    np.testing.assert_array_equal(again.image, with_l2.image)  # the seed fixes start and jitter


def test_the_update_rules_are_the_derived_gradient_steps(rng):
    """The notebooks derive: ascent on S_c - lambda ||I||^2 with eta = lr / rms(g) is ascent_step with
    l2_decay = 2 lambda eta; descent on L + lambda/2 ||x - x0||^2 is fooling_step with l2_decay = lambda eta."""
    x, x0, g = rng.randn(3, 5, 5), rng.randn(3, 5, 5), rng.randn(3, 5, 5)
    lr, decay = 0.7, 0.05
    eta = lr / np.sqrt(np.mean(g ** 2))
    lam = decay / (2 * eta)
    np.testing.assert_allclose(ascent_step(x, g, lr, decay), x + eta * (g - 2 * lam * x))
    lam = decay / eta
    np.testing.assert_allclose(fooling_step(x, x0, g, lr, decay), x - eta * (g + lam * (x - x0)))


@pytest.mark.slow
def test_fooling_image_reaches_the_target_confidently_with_a_small_change(tiny, pictures):
    x0 = tiny.preprocess(pictures[1])
    before = int(np.argmax(forward_scores(tiny.net, x0)))
    target = (before + 1) % len(TINY_CLASSES)
    r = fooling_image(tiny.net, x0, target, learning_rate=0.5, max_iterations=300, bounds=tiny.bounds)
    assert r.fooled and r.stopped == "fooled" and r.original_class == before
    assert int(np.argmax(forward_scores(tiny.net, r.image))) == target
    assert r.target_probs[-1] >= 0.5 and r.target_probs[-2] < 0.5  # the margin, not bare top-1; and no further
    assert r.losses[-1] < r.losses[0] and r.target_probs[-1] > r.target_probs[0]
    assert len(r.losses) == len(r.target_probs) == len(r.distances) == r.iterations + 1
    pixels = np.linalg.norm(tiny.deprocess(x0) * 255)
    assert np.linalg.norm(r.perturbation) < 0.1 * pixels, (np.linalg.norm(r.perturbation), pixels)
    np.testing.assert_allclose(r.image - x0, r.perturbation, atol=1e-4)
    confident = fooling_image(tiny.net, x0, target, learning_rate=0.5, max_iterations=400, confidence=0.9,
                              bounds=tiny.bounds)
    assert confident.fooled and confident.target_probs[-1] >= 0.9
    bare = fooling_image(tiny.net, x0, target, learning_rate=0.5, max_iterations=300, confidence=None,
                         bounds=tiny.bounds)
    assert bare.fooled and bare.iterations <= r.iterations
    boxed = fooling_image(tiny.net, x0, target, learning_rate=0.5, max_iterations=300, bounds=tiny.bounds,
                          max_change=12.0)
    assert boxed.fooled and np.abs(boxed.perturbation).max() <= 12.0 + 1e-3


def test_pgd_stays_in_its_budget_and_the_minimal_budget_is_minimal(tiny, pictures):
    x0 = tiny.preprocess(pictures[1])
    target = (int(np.argmax(forward_scores(tiny.net, x0))) + 1) % len(TINY_CLASSES)
    low, high = tiny.bounds
    small = pgd_attack(tiny.net, x0, target, 0.5, iterations=10, bounds=tiny.bounds)
    assert np.abs(small.image - x0).max() <= 0.5 + 1e-4 and not small.fooled
    assert np.all(small.image >= low - 1e-4) and np.all(small.image <= high + 1e-4)
    m = minimal_pgd(tiny.net, x0, target, start=1.0, largest=128.0, refine=3, iterations=20, bounds=tiny.bounds)
    assert m.fooled and m.target_prob >= 0.5 and np.abs(m.image - x0).max() == pytest.approx(m.linf, abs=1e-3)
    assert not pgd_attack(tiny.net, x0, target, 0.5 * m.linf, iterations=20, bounds=tiny.bounds).fooled


def test_every_loop_runs_the_per_step_regularisers_it_is_given(tiny, pictures):
    x0 = tiny.preprocess(pictures[1])
    target = (int(np.argmax(forward_scores(tiny.net, x0))) + 1) % len(TINY_CLASSES)
    seen = []

    def record(loop):
        def step(x, iteration):
            seen.append((loop, iteration))
            return x

        return step

    box = clip_around(x0, 2.0)  # tighter than the attacks' own limits: only a regulariser that runs holds it
    class_model_visualization(tiny.net, 1, iterations=3, jitter=0, regularisers=[record("visualisation")])
    fool = fooling_image(tiny.net, x0, target, learning_rate=5.0, max_iterations=3, confidence=0.999,
                         bounds=tiny.bounds, regularisers=[box, record("fooling")])
    pgd = pgd_attack(tiny.net, x0, target, 50.0, iterations=3, confidence=0.999, bounds=tiny.bounds,
                     regularisers=[box, record("pgd")])
    assert np.abs(fool.perturbation).max() <= 2.0 + 1e-4 and np.abs(pgd.image - x0).max() <= 2.0 + 1e-4
    assert seen == ([("visualisation", i) for i in range(3)] + [("fooling", i) for i in range(fool.iterations)]
                    + [("pgd", i) for i in range(pgd.iterations)]), seen
    assert fool.iterations == pgd.iterations == 3, "a step per iteration, after the attacks' own clips"


@pytest.mark.slow
def test_fooling_evaluation_compares_with_pgd_and_writes_markdown_and_csv(tiny, pictures, tmp_path):
    images = {f"image {i}": p for i, p in enumerate(pictures[:2])}
    evaluation = evaluate_fooling(tiny, images, [0, 3], pgd=dict(iterations=20, refine=1), learning_rate=0.5,
                                  max_iterations=300)
    s, rows = evaluation.summary, evaluation.rows
    assert s["attempts"] + s["skipped"] == 4 and s["attempts"] == len(rows) >= 2
    assert all(r["fooled"] and r["target_prob"] >= 0.5 for r in rows), rows  # this net is easy to fool
    assert s["success_rate"] == 1.0 and s["pgd_success_rate"] == 1.0
    assert s["median_l2"] == pytest.approx(np.median([r["l2"] for r in rows]))
    assert s["median_linf"] == pytest.approx(np.median([r["linf"] for r in rows]))
    assert s["median_pgd_linf"] == pytest.approx(np.median([r["pgd_linf"] for r in rows]))
    assert all(0 < r["linf"] <= r["l2"] and r["pgd_linf"] > 0 for r in rows)
    md, csv = evaluation.write(tmp_path, "fooling")
    assert md.read_text().startswith("Fooling 2 images x 2 targets")
    assert "| ours (L2-regularised descent) | 100% |" in md.read_text()
    assert "| PGD, smallest L-inf budget | 100% |" in md.read_text()
    lines = csv.read_text().splitlines()
    assert lines[0] == "image,original,target,fooled,stopped,iterations,target_prob,l2,linf,pgd_fooled,pgd_linf"
    assert len(lines) == 1 + s["attempts"]


def test_saliency_depends_on_the_weights_and_they_come_back(tiny, pictures):
    x = tiny.preprocess(pictures[0])
    c = int(np.argmax(forward_scores(tiny.net, x)))
    trained = saliency_map(tiny.net, x, c)
    before = {k: [b.data.copy() for b in v] for k, v in tiny.net.params.items()}
    with randomized_weights(tiny.net, seed=1):
        assert not np.array_equal(tiny.net.params["conv1"][0].data, before["conv1"][0])
        random = saliency_map(tiny.net, x, c)
    for k, v in tiny.net.params.items():
        for blob, saved in zip(v, before[k], strict=True):
            np.testing.assert_array_equal(blob.data, saved)
    np.testing.assert_array_equal(saliency_map(tiny.net, x, c), trained)
    assert rank_correlation(trained, trained) == pytest.approx(1.0)
    assert rank_correlation(trained, random) < 0.9


# ---- preprocessing ------------------------------------------------------------------------------------------------


def test_deprocess_inverts_preprocess_and_bounds_are_the_pixel_range(tiny, rng):
    picture = rng.rand(67, 67, 3).astype(np.float32)
    x = tiny.preprocess(picture)
    assert x.shape == (3, 67, 67)
    np.testing.assert_allclose(tiny.deprocess(x, clip=False), picture, atol=1e-5)
    red = np.zeros((67, 67, 3), np.float32)
    red[..., 0] = 1.0
    xr = tiny.preprocess(red)  # BGR inside: red is channel 2, minus its mean (74)
    np.testing.assert_allclose(xr[:, 0, 0], [-70.0, -72.0, 255.0 - 74.0])
    low, high = pixel_bounds(tiny.transformer)
    np.testing.assert_allclose(tiny.preprocess(np.zeros((67, 67, 3))), np.broadcast_to(low, x.shape))
    np.testing.assert_allclose(tiny.preprocess(np.ones((67, 67, 3))), np.broadcast_to(high, x.shape), rtol=1e-6)
    grey = tiny.preprocess(np.full((28, 28), 128, np.uint8))  # resized, three equal channels
    np.testing.assert_allclose(grey[:, 10, 10] + [70, 72, 74], [128.0] * 3, atol=1e-3)
    shown = overlay(tiny.deprocess(x), saliency_map(tiny.net, x, 0))
    assert shown.shape == (67, 67, 3) and shown.min() >= 0 and shown.max() <= 1


def test_model_card_loads_what_it_describes(tiny, tiny_card):
    assert tiny.name == "tiny" and tiny.classes == TINY_CLASSES and tiny.device == "CPU"
    assert tiny.input_shape == (3, 67, 67) and tiny.prototxt is None
    assert "tiny AlexNet" in tiny.description and "width 0.05" in tiny.description
    assert tiny.class_index("trouser") == 1 and tiny.label(0) == "T-shirt/top"
    top = top_k(forward_scores(tiny.net, tiny.preprocess(np.zeros((5, 5)))), tiny.classes, 3)
    assert len(top) == 3 and top[0][2] >= top[1][2] >= top[2][2] and sum(t[2] for t in top) <= 1 + 1e-9
    assert all(tiny.classes[i] == name for i, name, _ in top)


# ---- committed deploys and notebooks ------------------------------------------------------------------------------


def test_committed_deploys_equal_the_generator():
    assert deploys.stale_deploys() == [], "run `python -m q3_visualize_break.deploys --write`"


@pytest.mark.parametrize("name, crop, classes", [("bvlc_alexnet_deploy_gradients.prototxt", 227, 1000),
                                                 ("demo_alexnet_deploy_gradients.prototxt", 99, 5)])
def test_gradients_deploy_has_no_softmax_forces_backward_batch_one(name, crop, classes):
    net = caffe_pb2.NetParameter()
    text_format.Parse((REPO / "models/q3" / name).read_text(), net)
    assert net.force_backward
    assert not any(layer.type in ("Softmax", "SoftmaxWithLoss") for layer in net.layer)
    assert net.layer[-1].name == "fc8" and net.layer[-1].inner_product_param.num_output == classes
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, crop, crop]


def test_input_gradient_through_the_committed_demo_deploy_is_the_derivative_of_its_score(rng):
    """Backward from fc8 through the committed deploy (force_backward, no Softmax) gives dS_c/dI: a step along
    it raises S_c at the rate ||dS_c/dI|| that forward passes measure (a gradient of another class, or of the
    probability, or one stopped short of the data would not)."""
    net = caffe.Net(str(REPO / "models/q3/demo_alexnet_deploy_gradients.prototxt"), caffe.TEST)
    he_init(net, rng)
    x = (50 * rng.randn(3, 99, 99)).astype(np.float32)
    for c in (0, 2):
        _, grad, _ = input_gradient(net, x, class_score(c))
        rate = float(np.linalg.norm(grad.astype(np.float64)))
        d, h = grad / rate, 0.1  # a unit step direction; h: 0.1 net input units, far above float32 rounding
        measured = (forward_scores(net, x + h * d)[c] - forward_scores(net, x - h * d)[c]) / (2 * h)
        assert rate > 0 and measured == pytest.approx(rate, rel=0.02), (c, measured, rate)


HOMEWORK_CODE = {  # what each notebook must show as code: the completed "missing code" of the exercise
    "class-model-visualizations.ipynb": ("class_score", "input_gradient", "ascent_step", "class_model_visualization"),
    "saliency-maps.ipynb": ("class_score", "input_gradient", "saliency_map"),
    "breaking-convnets.ipynb": ("cross_entropy", "input_gradient", "fooling_step", "fooling_image", "pgd_attack"),
}


def test_committed_notebooks_are_their_scripts_within_the_size_budget():
    assert run_notebooks.stale_notebooks() == [], "python -m q3_visualize_break.run_notebooks --model demo --commit"
    for name in run_notebooks.NOTEBOOKS:
        path = REPO / "q3_visualize_break" / name
        assert path.stat().st_size <= run_notebooks.SIZE_BUDGET, name
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and 'os.environ.get("Q3_MODEL", "auto")' in params[0].source, name
        assert any(c.cell_type == "markdown" and "arxiv.org" in c.source for c in nb.cells), name
        shown = "".join(c.source for c in code if "show_source(" in c.source)
        assert all(f in shown for f in HOMEWORK_CODE[name]), name
        assert any(c.cell_type == "markdown" and "l2_decay" in c.source and "$$" in c.source for c in nb.cells) \
            or name == "saliency-maps.ipynb", name  # the update rule, derived


def test_notebook_scripts_fail_the_check_when_they_drift(tmp_path, monkeypatch):
    for name in run_notebooks.NOTEBOOKS:
        (tmp_path / name).write_text((REPO / "q3_visualize_break" / name).read_text())
    assert run_notebooks.stale_notebooks(tmp_path) == []
    nb = nbformat.read(tmp_path / "saliency-maps.ipynb", as_version=4)
    nb.cells[1].source += "\nIMAGES = 4"
    nbformat.write(nb, tmp_path / "saliency-maps.ipynb")
    assert run_notebooks.stale_notebooks(tmp_path) == [tmp_path / "saliency-maps.ipynb"]


@pytest.mark.slow
def test_notebooks_execute_end_to_end_on_a_tiny_model(tiny_card, tmp_path):
    out = tmp_path / "q3"
    executed = run_notebooks.run_notebooks(out=out, model=str(tiny_card), fast=True, threads=1)  # as make demo does
    assert [p.name for p in executed] == list(run_notebooks.NOTEBOOKS)
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), path.name
        text = "".join(o.get("text", "") for c in code for o in c.outputs)
        assert "model: tiny on CPU" in text and f"python: {sys.executable}" in text, path.name
        assert any(o.output_type == "display_data" and "image/png" in o.data for c in code for o in c.outputs)
        shown = "".join(o.data.get("text/markdown", "") for c in code for o in c.outputs if "data" in o)
        assert "net.backward()" in shown and "def input_gradient" in shown, path.name  # the homework code itself
    for figure in ("class-model-visualizations", "class-model-history", "saliency-maps", "saliency-two-classes",
                   "saliency-sanity", "fooling-images", "fooling-history"):
        assert (out / f"{figure}.png").stat().st_size > 1000, figure
    assert (out / "fooling-evaluation.md").exists() and (out / "fooling-evaluation.csv").exists()


def test_the_kernels_get_the_thread_count_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    env = run_notebooks.kernel_env(tmp_path, "demo", False, None, threads=1)
    assert [env[k] for k in run_notebooks.THREAD_VARIABLES] == ["1", "1", "1"]
    assert run_notebooks.kernel_env(tmp_path, "demo", False, None)["OMP_NUM_THREADS"] == "2"  # else as it was


@pytest.mark.slow
def test_a_failing_notebook_names_itself_and_the_cell(tmp_path):
    with pytest.raises(run_notebooks.NotebookError) as e:
        run_notebooks.run_notebooks(out=tmp_path, model=str(tmp_path / "missing.json"), fast=True,
                                    only=["saliency-maps"])
    msg = str(e.value)
    assert msg.startswith("saliency-maps.ipynb: cell 2") and "FileNotFoundError" in msg and "missing.json" in msg
    assert (tmp_path / "saliency-maps.ipynb").exists()


# ---- clear errors -------------------------------------------------------------------------------------------------


def test_bad_class_index_and_image_shape(tiny):
    x = np.zeros((3, 67, 67), np.float32)
    for bad in (4, -1, 1.5, "1"):
        with pytest.raises(ValueError, match="out of range: this net has 4 classes"):
            saliency_map(tiny.net, x, bad)
    with pytest.raises(ValueError, match="out of range"):
        class_model_visualization(tiny.net, 7, iterations=1)
    with pytest.raises(ValueError, match="out of range"):
        fooling_image(tiny.net, x, 9)
    with pytest.raises(ValueError, match=r"shape \(3, 50, 50\) does not fit .* \(3, 67, 67\)"):
        saliency_map(tiny.net, np.zeros((3, 50, 50)), 0)
    with pytest.raises(ValueError, match=r"shape \(1, 67, 67\) does not fit"):
        saliency_map(tiny.net, np.zeros((1, 67, 67)), 0)
    with pytest.raises(ValueError, match="model.preprocess"):
        fooling_image(tiny.net, np.zeros((67, 67, 3)), 0)
    with pytest.raises(ValueError, match="no class named 'zebra'"):
        tiny.class_index("zebra")


def test_net_without_force_backward_or_with_softmax_is_refused(tmp_path):
    text = (REPO / "models/q3/demo_alexnet_deploy_gradients.prototxt").read_text()
    assert "force_backward: true\n" in text
    no_force = write_prototxt(tmp_path / "no_force.prototxt", text.replace("force_backward: true\n", ""))
    net = caffe.Net(str(no_force), caffe.TEST)
    with pytest.raises(ValueError, match="lacks `force_backward: true`"):
        saliency_map(net, np.zeros((3, 99, 99)), 0)
    from tools.alexnet import deploy

    softmax = deploy(num_classes=3, width=0.05, crop=67, batch_size=1, force_backward=True)
    net = caffe.Net(str(write_prototxt(tmp_path / "softmax.prototxt", softmax)), caffe.TEST)
    with pytest.raises(ValueError, match="Softmax"):
        saliency_map(net, np.zeros((3, 67, 67)), 0)


def test_missing_or_mismatched_weights_and_bad_cards(tiny_card, tmp_path, monkeypatch):
    card = json.loads(tiny_card.read_text())
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps(card | {"weights": str(tmp_path / "nope.caffemodel")}))
    with pytest.raises(FileNotFoundError, match="nope.caffemodel"):
        loading.load_model(str(missing))
    wider = tmp_path / "wider.json"
    wider.write_text(json.dumps(card | {"width": 0.1}))
    with pytest.raises(ValueError, match="width/crop/classes"):
        loading.load_model(str(wider))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({k: v for k, v in card.items() if k != "mean_value"}))
    with pytest.raises(ValueError, match="lacks mean_value"):
        loading.load_model(str(broken))
    with pytest.raises(ValueError, match="unknown model 'alexnet'"):
        loading.load_model("alexnet")

    monkeypatch.setattr(loading, "BVLC_WEIGHTS", tmp_path / "bvlc_alexnet.caffemodel")
    monkeypatch.setattr(paths, "RESULTS", tmp_path / "results")
    with pytest.raises(FileNotFoundError, match="download_model bvlc_alexnet"):
        loading.load_model("bvlc_alexnet")
    with pytest.raises(FileNotFoundError, match="make demo"):
        loading.load_model("demo")
    with pytest.raises(FileNotFoundError, match=r"no model for Q3.*download_model bvlc_alexnet.*make demo"):
        loading.load_model("auto")


def test_gpu_on_a_cpu_build_is_refused():
    if paths.is_gpu_build():
        pytest.skip("this Caffe is a CUDA build")
    with pytest.raises(device.DeviceError, match="CPU-only Caffe build.*CAFFE_GPU=1"):
        device.select("0")
    with pytest.raises(device.DeviceError, match="not a device id"):
        device.select("cuda")
    assert device.select("") == "CPU" and device.gpu_ids(" 1, 0 ") == [1, 0] and device.gpu_ids("-1") == []
    with pytest.raises(ValueError, match="CPU-only Caffe build"):
        run_notebooks.run_notebooks(gpu="0", only=["saliency-maps"])


def test_loading_cli_shows_the_model_or_one_line_of_error(tiny_card, tmp_path):
    def show(card):
        return subprocess.run([sys.executable, "-m", "q3_visualize_break.loading", "--show", str(card)], cwd=REPO,
                              capture_output=True, text=True, env={**os.environ, "GPU": ""})

    out = show(tiny_card)
    assert out.returncode == 0 and out.stdout.startswith("tiny on CPU: a tiny AlexNet, random weights (4 classes; "
                                                         "AlexNet at width 0.05, 67x67 input"), out.stdout + out.stderr
    out = show(tmp_path / "missing.json")
    assert out.returncode == 1 and out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
    assert "missing.json" in out.stderr


def test_deploys_write_is_the_committed_text_and_keeps_unchanged_dates(tmp_path):
    written = deploys.write_deploys(tmp_path)
    assert [p.name for p in written] == list(deploys.DEPLOYS) and deploys.stale_deploys(tmp_path) == []
    for path in written:
        assert path.read_text() == (REPO / "models/q3" / path.name).read_text()
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    deploys.write_deploys(tmp_path)
    assert all(p.stat().st_mtime_ns == 1_000_000_000 for p in written), "unchanged deploys keep their dates"


@pytest.mark.parametrize("module", ["deploys", "run_notebooks"])
def test_cli_check_passes_on_the_committed_files(module):
    out = subprocess.run([sys.executable, "-m", f"q3_visualize_break.{module}", "--check"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
