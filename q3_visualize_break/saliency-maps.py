# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Image-specific class saliency maps
#
# Simonyan, Vedaldi and Zisserman, ICLR 2014 workshop ([arXiv:1312.6034](https://arxiv.org/abs/1312.6034)),
# section 3.
#
# Which pixels of *this* image matter most for its class? Around a given image $I_0$ the class score is
# nearly linear in the pixels, $S_c(I) \approx w^T I + b$, with
#
# $$w = \left. \frac{\partial S_c}{\partial I} \right|_{I_0}$$
#
# computed by one backward pass (the score's diff set to one-hot at class $c$, backpropagated to the
# data blob). Pixels with a large $|w|$ change the score most; the map keeps, for each pixel, the
# largest magnitude over the colour channels: $M_{ij} = \max_k |w_{k,i,j}|$.

# %% tags=["parameters"]
import os

MODEL = os.environ.get("Q3_MODEL", "auto")  # auto | bvlc_alexnet | demo | path/to/model.json
GPU = os.environ.get("GPU", "")  # "" runs on the CPU; a device id needs a CUDA build of Caffe
FAST = os.environ.get("Q3_FAST", "") == "1"  # tiny iteration counts (the tests run the notebooks this way)
OUT = os.environ.get("Q3_OUT", "")  # where figures go; "" means results/q3
IMAGES = 3  # how many example images

# %%
import sys
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "q3_visualize_break").is_dir())
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")  # keep Caffe's net set-up log out of the notebook

import matplotlib.pyplot as plt
import numpy as np

from q3_visualize_break import figures
from q3_visualize_break.gradients import class_score, forward_scores, input_gradient, top_k
from q3_visualize_break.images import example_images
from q3_visualize_break.loading import start_notebook
from q3_visualize_break.saliency import overlay, randomized_weights, rank_correlation, saliency_map

model, out = start_notebook(MODEL, GPU, OUT)

# %% [markdown]
# ## The completed code
#
# Forward, the one-hot class-score gradient in the top blob's `diff`, backward to the image, then the
# maximum magnitude over the colour channels:

# %%
figures.show_source(class_score, input_gradient, saliency_map)

# %% [markdown]
# Example images ship with installed packages: scikit-image's photographs for an ImageNet model,
# Fashion-MNIST test images (grey, as three equal channels, resized to the net's input) for a small
# one. Each map is for the class the net ranks first.

# %%
rows = []
for example in example_images(model, IMAGES):
    x = model.preprocess(example.image)
    scores = forward_scores(model.net, x)
    c = int(np.argmax(scores))
    rows.append((example, x, c, saliency_map(model.net, x, c), top_k(scores, model.classes, 5)))
    print(f"{example.name}: top-1 {model.label(c)} (p = {top_k(scores, model.classes, 1)[0][2]:.3f})")

# %% [markdown]
# Image, saliency map and overlay side by side (the image as the net sees it, resized to its input).

# %%
fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.4 * len(rows)), squeeze=False)
for (example, x, c, sal, top), (ax_i, ax_s, ax_o) in zip(rows, axes, strict=True):
    picture = model.deprocess(x)
    ax_i.imshow(picture)
    ax_i.set_title(f"{example.name}\n{figures.top_k_text(top[:2])}", fontsize=8)
    ax_s.imshow(sal, cmap="gray")
    ax_s.set_title(f"saliency for '{model.label(c)}'", fontsize=9)
    ax_o.imshow(overlay(picture, sal))
    ax_o.set_title("overlay", fontsize=9)
    for ax in (ax_i, ax_s, ax_o):
        ax.axis("off")
fig.tight_layout()
print(figures.save_figure(fig, "saliency-maps", out))
plt.show()

# %% [markdown]
# The map is a gradient, so it answers "which pixels would change the score most", not "which pixels
# the decision was based on": it is noisy, and bright on edges and texture of the object. A class other
# than the top-1 gives another map of the same image; how much it differs is measured below by the
# Spearman rank correlation of the two maps' pixels (1: the same ranking).

# %%
example, x, c, sal_top, top = rows[0]
other = top[1][0]
sal_other = saliency_map(model.net, x, other)
fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
for ax, sal, k in zip(axes, (sal_top, sal_other), (c, other), strict=True):
    ax.imshow(overlay(model.deprocess(x), sal))
    ax.set_title(f"saliency for '{model.label(k)}'", fontsize=9)
    ax.axis("off")
print(figures.save_figure(fig, "saliency-two-classes", out))
plt.show()
print(f"rank correlation of the two classes' maps: {rank_correlation(sal_top, sal_other):.2f}")

# %% [markdown]
# ## Sanity check: does the map depend on what the net learned?
#
# Adebayo et al. (*Sanity Checks for Saliency Maps*, NeurIPS 2018) showed that some saliency methods
# give nearly the same maps for a net with random weights, i.e. they show the image's edges rather
# than the model. The test: the same images, the same method, the net's weights replaced by random
# He-initialised ones. A map that explains the trained net should change (rank correlation well below 1).
# Also shown: the share of saliency on the object (pixels brighter than the background) for each.

# %%
def on_object(x, sal):
    picture = model.deprocess(x).mean(axis=2)
    mask = picture > picture.min() + 0.1
    return float(sal[mask].sum() / sal.sum()), float(mask.mean())


random_maps = []
with randomized_weights(model.net, seed=2014):
    for _, x, c, _, _ in rows:
        random_maps.append(saliency_map(model.net, x, c))
correlations = [rank_correlation(sal, rnd) for (_, _, _, sal, _), rnd in zip(rows, random_maps, strict=True)]
for (example, x, _, sal, _), rnd, rho in zip(rows, random_maps, correlations, strict=True):
    (share, area), (share_rnd, _) = on_object(x, sal), on_object(x, rnd)
    print(f"{example.name}: trained vs random rho = {rho:.2f}; saliency on the object {share:.0%} trained, "
          f"{share_rnd:.0%} random (the object is {area:.0%} of the image)")
print(f"median rank correlation trained vs random weights: {np.median(correlations):.2f}")

fig, axes = plt.subplots(len(rows), 2, figsize=(6.5, 3.2 * len(rows)), squeeze=False)
for (_, _, _, sal, _), rnd, (ax_t, ax_r) in zip(rows, random_maps, axes, strict=True):
    ax_t.imshow(sal, cmap="gray")
    ax_t.set_title("trained weights", fontsize=9)
    ax_r.imshow(rnd, cmap="gray")
    ax_r.set_title("random weights", fontsize=9)
    ax_t.axis("off")
    ax_r.axis("off")
fig.tight_layout()
print(figures.save_figure(fig, "saliency-sanity", out))
plt.show()
