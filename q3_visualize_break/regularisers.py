"""Per-step regularisers of Q3's optimisation loops: each a callable `(x, iteration) -> x`, run in order
after every step of the class visualisation, the fooling descent and PGD, all of which take a list of
them (`regularisers=`) after their own. Yosinski et al. (ICML DL workshop 2015) blur and clip the class
images this way; the attacks' box around the original and L-inf ball are steps of the same kind:

    regularisers = [gaussian_blur(0.5, every=4), clip_to(model.bounds)]
    class_model_visualization(net, c, regularisers=regularisers)
    fooling_image(net, x0, t, regularisers=[clip_around(x0, 8.0)])
"""

import numpy as np
from scipy.ndimage import gaussian_filter


def gaussian_blur(sigma: float, every: int):
    """Blur each channel with a Gaussian of `sigma` pixels every `every` iterations (removes the high-frequency
    patterns the net also responds to)."""
    def blur(x, iteration):
        if sigma > 0 and every > 0 and (iteration + 1) % every == 0:
            return gaussian_filter(x, sigma=(0, sigma, sigma))
        return x

    return blur


def clip_to(bounds):
    """Clip to (low, high), broadcastable to (C, H, W): e.g. model.bounds, the valid pixels."""
    low, high = bounds

    def clip(x, iteration):
        return np.clip(x, low, high)

    return clip


def clip_around(center, radius: float):
    """Clip to center +- radius per pixel (net input units): the fooling image's box around the original,
    PGD's L-inf ball."""
    return clip_to((center - radius, center + radius))


def apply(regularisers, x, iteration) -> np.ndarray:
    """`x` after each of `regularisers` in turn, as float32 (the net's input type)."""
    for regularise in regularisers:
        x = regularise(x, iteration)
    return x.astype(np.float32, copy=False)
