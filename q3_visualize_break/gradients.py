"""Input gradients through a pycaffe net, with one calling convention for what is differentiated.

An objective is an `Objective`: `objective(scores, image) -> (value, d value / d scores, d value / d image)`
on the net's output vector (the unnormalised class scores) and its input image. `input_gradient(net, x,
objective)` runs forward, evaluates the objective in numpy, puts its score gradient into the score blob's
diff, runs backward to the image and adds the objective's own image gradient:

    value, grad, scores = input_gradient(net, x, class_score(c))       # S_c and dS_c/dI (saliency, visualisation)
    value, grad, scores = input_gradient(net, x, cross_entropy(t))     # -log p_t and its gradient (fooling)

Objectives add, subtract, negate and scale by numbers, as Lucent's do; the gradients are the same sums:

    objective = class_score(c) - 0.5 * class_score(d) - 1e-3 * l2()   # S_c - S_d / 2 - 0.001 ||I||^2
"""

import numbers

import numpy as np


class Objective:
    """A differentiable function of the class scores (K,) and the image (C, H, W), called as
    `objective(scores, image) -> (value, d value / d scores, d value / d image)`. A term of the scores alone
    gives 0 as its image gradient (and one of the image alone 0 as its score gradient), so that sums and
    multiples of objectives are sums and multiples of their three parts. `description` says what it is."""

    def __init__(self, function, description: str):
        self.function, self.description = function, description

    def __call__(self, scores, image):
        return self.function(scores, image)

    def __add__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented

        def total(scores, image):
            (a, a_scores, a_image), (b, b_scores, b_image) = self(scores, image), other(scores, image)
            return a + b, a_scores + b_scores, a_image + b_image

        return Objective(total, f"{self.description} + {other.description}")

    def __mul__(self, factor):
        if not isinstance(factor, numbers.Real):
            return NotImplemented

        def scaled(scores, image):
            value, d_scores, d_image = self(scores, image)
            return factor * value, factor * d_scores, factor * d_image

        return Objective(scaled, f"{factor:g} * ({self.description})")

    __rmul__ = __mul__

    def __neg__(self):
        return -1 * self

    def __sub__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return self + -other

    def __repr__(self):
        return f"Objective({self.description})"


def class_score(class_index: int) -> Objective:
    """S_c: the unnormalised score of one class; its gradient wrt the scores is one-hot."""
    def objective(scores, image):
        onehot = np.zeros_like(scores)
        onehot[class_index] = 1.0
        return float(scores[class_index]), onehot, 0.0

    return Objective(objective, f"class_score({class_index})")


def cross_entropy(target: int) -> Objective:
    """Softmax cross-entropy -log p_target of the scores; its gradient wrt the scores is p - onehot."""
    def objective(scores, image):
        p = softmax(scores)
        grad = p.copy()
        grad[target] -= 1.0
        return float(-np.log(max(p[target], 1e-30))), grad, 0.0

    return Objective(objective, f"cross_entropy({target})")


def l2(center=None) -> Objective:
    """||I - center||^2 of the image (default center 0: the mean image in net input units); its gradient wrt the
    image is 2 (I - center). `class_score(c) - lam * l2()` is Simonyan et al.'s objective."""
    def objective(scores, image):
        d = np.asarray(image, np.float64) - (0.0 if center is None else center)
        return float(np.sum(d * d)), 0.0, 2 * d

    return Objective(objective, "l2()" if center is None else "l2(center)")


def softmax(scores) -> np.ndarray:
    z = np.asarray(scores, np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def score_blob(net) -> str:
    """The net's output blob, checked to be unnormalised scores of shape (1, K)."""
    name = net.outputs[-1]
    if net.layers[-1].type == "Softmax":
        raise ValueError(f"the net's output '{name}' comes from a Softmax layer; gradients of probabilities mix all "
                         "classes. Use the deploy without Softmax (models/q3/*_deploy_gradients.prototxt, "
                         "q3_visualize_break.loading.load_model)")
    shape = net.blobs[name].data.shape
    if len(shape) != 2 or shape[0] != 1:
        raise ValueError(f"the net's output '{name}' has shape {shape}, expected (1, classes): use a deploy with "
                         "batch_size=1 whose last layer is the classifier (fc8)")
    return name


def num_classes(net) -> int:
    return net.blobs[score_blob(net)].data.shape[1]


def check_class(net, class_index) -> int:
    k = num_classes(net)
    if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)) or not 0 <= class_index < k:
        raise ValueError(f"class index {class_index!r} is out of range: this net has {k} classes (0..{k - 1}); "
                         "look names up with model.class_index(name)")
    return int(class_index)


def check_image(net, image) -> np.ndarray:
    """`image` as the net's input (C, H, W) float32; a (1, C, H, W) batch of one is accepted."""
    data = net.blobs[net.inputs[0]].data
    if data.shape[0] != 1:
        raise ValueError(f"the net's input '{net.inputs[0]}' takes batches of {data.shape[0]}; Q3 differentiates one "
                         "image at a time: use the gradients deploy (batch_size=1)")
    x = np.asarray(image, np.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    want = data.shape[1:]
    if x.shape != want:
        hint = (" (a picture (H, W, C)? convert it with model.preprocess(picture))" if x.ndim == 3 and x.shape[-1] in
                (1, 3, 4) else "")
        raise ValueError(f"image of shape {x.shape} does not fit the net's input '{net.inputs[0]}' of shape "
                         f"{tuple(want)} (channels, height, width){hint}")
    if not np.all(np.isfinite(x)):
        raise ValueError("image contains NaN or infinite values")
    return x


def forward_scores(net, image) -> np.ndarray:
    """The class scores (K,) of one image."""
    x = check_image(net, image)
    net.blobs[net.inputs[0]].data[0] = x
    out = score_blob(net)
    return net.forward()[out][0].astype(np.float64)


def input_gradient(net, image, objective):
    """(value, d value / d image (C, H, W), scores (K,)) for `objective` (an Objective) at net input `image`: the
    backward pass carries the gradient through the scores, the objective adds its own wrt the image."""
    x = check_image(net, image)
    out, data = score_blob(net), net.inputs[0]
    net.blobs[data].data[0] = x
    scores = net.forward()[out][0].astype(np.float64)
    value, grad_scores, grad_image = objective(scores, x)
    net.blobs[out].diff[0] = grad_scores
    # Caffe leaves the input diff untouched when backward stops short of it (no force_backward):
    # a NaN sentinel tells that apart from a true zero gradient.
    net.blobs[data].diff[...] = np.nan
    net.backward()
    grad = net.blobs[data].diff[0].copy()
    if np.isnan(grad).all():
        raise ValueError(f"backward did not reach the net's input '{data}': its prototxt lacks `force_backward: true`, "
                         "and Caffe skips input gradients without it. Fix: add `force_backward: true` to the "
                         "prototxt, or load the gradients deploy (models/q3/*_deploy_gradients.prototxt, "
                         "q3_visualize_break.loading.load_model)")
    return value, grad + grad_image, scores


def top_k(scores, classes, k=5) -> list:
    """[(index, name, probability)] of the k most probable classes."""
    p = softmax(scores)
    order = np.argsort(-p)[:k]
    return [(int(i), classes[i], float(p[i])) for i in order]


def within_bounds(direction, x, bounds) -> np.ndarray:
    """`direction` with the components that would push a pixel already at a bound further out set to zero.

    A step along the rest moves the pixels that can move; otherwise clipping would undo part of every
    step (most of it on an image with a black background).
    """
    if bounds is None:
        return direction
    low, high = bounds
    return np.where(((x <= low) & (direction < 0)) | ((x >= high) & (direction > 0)), 0, direction)


def rms_normalized(g) -> np.ndarray:
    """g scaled to root-mean-square 1: a step of `learning_rate * rms_normalized(g)` changes pixels by about
    `learning_rate` net input units whatever the scale of the net's gradients."""
    rms = float(np.sqrt(np.mean(np.square(g, dtype=np.float64))))
    return g / rms if rms > 0 else g
