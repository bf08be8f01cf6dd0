"""Class model visualisation (Simonyan, Vedaldi, Zisserman, ICLR 2014, section 2), with the
regularisers of Yosinski et al. (ICML DL workshop 2015) that make the images readable.

Find an image I that maximises  S_c(I) - lambda * ||I||^2  by gradient ascent, from a small random
start (I is mean-subtracted, so 0 is the mean image). One step:

    x <- (1 - l2_decay) * x + learning_rate * g / rms(g),   g = dS_c/dI at a jittered copy of x

which is a gradient ascent step on the objective above with step size eta = learning_rate / rms(g)
and l2_decay = 2 * lambda * eta. Fixing the decay (rather than lambda) makes the L2 term independent
of how large a particular net's scores and gradients are: the image's RMS settles near
learning_rate / l2_decay, in pixel units. After each step the regularisers run (regularisers.py),
each a callable `(x, iteration) -> x`: periodic Gaussian blur (removes the high-frequency patterns the
net also responds to) and clipping to the valid pixel range. Jitter (a random shift of the image before each
forward pass, undone on the gradient) keeps the image from exploiting exact pixel positions.
"""

from dataclasses import dataclass

import numpy as np

from q3_visualize_break import regularisers as steps
from q3_visualize_break.gradients import check_class, class_score, input_gradient, rms_normalized, within_bounds


@dataclass
class ClassVisualization:
    image: np.ndarray  # (C, H, W) net input units; model.deprocess(image) shows it
    class_index: int
    scores: np.ndarray  # S_c at each iteration (of the jittered image the gradient came from)
    norms: np.ndarray  # ||I||_2 at each iteration, before the step


def ascent_step(x, grad, learning_rate, l2_decay):
    """One ascent step on S_c(I) - lambda ||I||^2: shrink by l2_decay = 2 lambda eta, then step along the
    score gradient with eta = learning_rate / rms(grad) (a step of `learning_rate` pixel units, RMS)."""
    return (1 - l2_decay) * x + learning_rate * rms_normalized(grad)


def class_model_visualization(net, class_index, *, iterations=200, learning_rate=1.0, l2_decay=0.02, jitter=4,
                              blur_sigma=0.5, blur_every=4, bounds=None, init_std=1.0, seed=0,
                              regularisers=(), objective=None) -> ClassVisualization:
    """Gradient ascent on S_c(I) - lambda ||I||^2 for class `class_index` (see the module docstring).

    learning_rate  RMS change of the image per step, in net input units (pixel units for raw_scale 255)
    l2_decay       fraction the image shrinks by per step (the L2 term); 0 turns it off
    jitter         largest random shift in pixels before each forward pass; 0 turns it off
    blur_sigma, blur_every   Gaussian blur of `blur_sigma` pixels every `blur_every` iterations; 0 turns it off
    bounds         (low, high) to clip to after each step, e.g. model.bounds; None: no clipping
    init_std       standard deviation of the random start, in net input units
    seed           seeds the start and the jitter
    regularisers   further callables (x, iteration) -> x (regularisers.py), run after the built-in ones
    objective      what to ascend (gradients.Objective), default class_score(class_index); the L2 term stays
                   l2_decay's
    """
    class_index = check_class(net, class_index)
    if iterations < 1 or learning_rate <= 0 or not 0 <= l2_decay < 1 or jitter < 0:
        raise ValueError(f"need iterations >= 1, learning_rate > 0, 0 <= l2_decay < 1 and jitter >= 0; got "
                         f"{iterations}, {learning_rate}, {l2_decay}, {jitter}")
    after_step = [steps.gaussian_blur(blur_sigma, blur_every), *([steps.clip_to(bounds)] if bounds is not None else []),
                  *regularisers]

    rng = np.random.RandomState(seed)
    shape = net.blobs[net.inputs[0]].data.shape[1:]
    x = (init_std * rng.randn(*shape)).astype(np.float32)
    objective = class_score(class_index) if objective is None else objective
    scores, norms = [], []
    for it in range(iterations):
        dy, dx = rng.randint(-jitter, jitter + 1, size=2) if jitter else (0, 0)
        score, grad, _ = input_gradient(net, np.roll(x, (dy, dx), axis=(1, 2)), objective)
        grad = np.roll(grad, (-dy, -dx), axis=(1, 2))
        scores.append(score)
        norms.append(float(np.linalg.norm(x)))
        x = steps.apply(after_step, ascent_step(x, within_bounds(grad, x, bounds), learning_rate, l2_decay), it)
    return ClassVisualization(x, class_index, np.array(scores), np.array(norms))
