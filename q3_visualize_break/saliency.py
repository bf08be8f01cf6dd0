"""Image-specific class saliency (Simonyan, Vedaldi, Zisserman, ICLR 2014, section 3).

Near an image I0 the class score is roughly linear, S_c(I) ~ w^T I + b with w = dS_c/dI at I0, so
the magnitude of w says which pixels the score is most sensitive to. One backward pass gives w; the
map is its largest absolute value over the colour channels: M_ij = max_c |w_c,i,j|.
"""

import numpy as np

from q3_visualize_break.gradients import check_class, class_score, input_gradient


def saliency_map(net, image, class_index) -> np.ndarray:
    """(H, W) map max_c |dS_c/dI| for net input `image` (C, H, W) and class `class_index`."""
    class_index = check_class(net, class_index)
    _, grad, _ = input_gradient(net, image, class_score(class_index))
    return np.abs(grad).max(axis=0)


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
