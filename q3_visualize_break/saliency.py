"""Image-specific class saliency (Simonyan, Vedaldi, Zisserman, ICLR 2014, section 3).

Near an image I0 the class score is roughly linear, S_c(I) ~ w^T I + b with w = dS_c/dI at I0, so
the magnitude of w says which pixels the score is most sensitive to. One backward pass gives w; the
map is its largest absolute value over the colour channels: M_ij = max_c |w_c,i,j|.

Sanity check (Adebayo et al., NeurIPS 2018): a map that explains the trained net must change when the
weights are replaced by random ones; `randomized_weights` swaps them in for a moment and
`rank_correlation` measures how alike two maps are (Spearman: 1 = the same pixel ranking).
"""

import contextlib

import numpy as np

from q3_visualize_break.gradients import check_class, class_score, input_gradient


def saliency_map(net, image, class_index) -> np.ndarray:
    """(H, W) map max_c |dS_c/dI| for net input `image` (C, H, W) and class `class_index`."""
    class_index = check_class(net, class_index)
    _, grad, _ = input_gradient(net, image, class_score(class_index))
    return np.abs(grad).max(axis=0)


@contextlib.contextmanager
def randomized_weights(net, seed=0):
    """Within the block every learned layer of `net` has random He-initialised weights (zero biases); the trained
    weights are restored afterwards."""
    saved = {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}
    rng = np.random.RandomState(seed)
    try:
        for blobs in net.params.values():
            w = blobs[0].data
            w[...] = rng.randn(*w.shape) * np.sqrt(2.0 / np.prod(w.shape[1:]))
            for b in blobs[1:]:
                b.data[...] = 0
        yield net
    finally:
        for name, arrays in saved.items():
            for blob, array in zip(net.params[name], arrays, strict=True):
                blob.data[...] = array


def rank_correlation(a, b) -> float:
    """Spearman rank correlation of two maps' pixels: 1 the same ranking, about 0 unrelated."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)


def overlay(picture, saliency, alpha=0.6, cmap="hot", percentile=99.0) -> np.ndarray:
    """The saliency map coloured by `cmap` over a greyed `picture` (H, W, 3) in [0, 1], for display.

    The map is scaled so its `percentile` maps to the top colour: a few extreme pixels would otherwise
    leave the rest of the map black.
    """
    import matplotlib

    picture = np.asarray(picture, np.float32)
    saliency = np.asarray(saliency, np.float32)
    if picture.shape[:2] != saliency.shape:
        raise ValueError(f"picture {picture.shape[:2]} and saliency map {saliency.shape} differ in size: "
                         "deprocess the same net input the map was computed for")
    top = np.percentile(saliency, percentile)
    level = np.clip(saliency / top, 0, 1) if top > 0 else np.zeros_like(saliency)
    colour = matplotlib.colormaps[cmap](level)[..., :3]
    grey = np.repeat(picture.mean(axis=2, keepdims=True), 3, axis=2)
    weight = alpha * level[..., None]
    return (1 - weight) * grey + weight * colour
