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
# # Class model visualisation
#
# Simonyan, Vedaldi and Zisserman, *Deep Inside Convolutional Networks: Visualising Image Classification
# Models and Saliency Maps*, ICLR 2014 workshop ([arXiv:1312.6034](https://arxiv.org/abs/1312.6034)), section 2.
#
# What image does the net think is most typical of a class? Look for the image $I$ that maximises the
# class score $S_c(I)$ (the unnormalised output `fc8`, not the softmax probability, which could also
# rise by lowering the other classes) with an L2 penalty that keeps the image close to the mean image:
#
# $$I^* = \arg\max_I \; S_c(I) - \lambda \lVert I \rVert_2^2$$
#
# The net's weights stay fixed; gradient ascent moves the pixels, with one backward pass per step
# through a deploy that has no Softmax and sets `force_backward: true`. The regularisers of Yosinski
# et al. (*Understanding Neural Networks Through Deep Visualization*, ICML DL workshop 2015) make the
# images readable: a random **jitter** of a few pixels before each step, a periodic **Gaussian blur**,
# and **clipping** to valid pixel values.

# %% tags=["parameters"]
import os

MODEL = os.environ.get("Q3_MODEL", "auto")  # auto | bvlc_alexnet | demo | path/to/model.json
GPU = os.environ.get("GPU", "")  # "" runs on the CPU; a device id needs a CUDA build of Caffe
FAST = os.environ.get("Q3_FAST", "") == "1"  # tiny iteration counts (the tests run the notebooks this way)
OUT = os.environ.get("Q3_OUT", "")  # where figures go; "" means results/q3
ITERATIONS = 8 if FAST else 100
LEARNING_RATE = 1.0  # RMS change per step, in pixel units (0..255)
L2_DECAY = 0.02  # fraction the image shrinks by per step: the lambda term
CLASS_NAMES = []  # [] picks defaults below

# %%
import sys
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "q3_visualize_break").is_dir())
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")  # keep Caffe's net set-up log out of the notebook

import matplotlib.pyplot as plt

from q3_visualize_break import figures
from q3_visualize_break.class_model import ascent_step, class_model_visualization
from q3_visualize_break.gradients import class_score, input_gradient
from q3_visualize_break.loading import start_notebook

model, out = start_notebook(MODEL, GPU, OUT)

# %% [markdown]
# ## The completed code
#
# **Forward, score gradient, backward.** `input_gradient` puts the image into the data blob, runs
# forward, evaluates the objective on the scores in numpy, writes its gradient with respect to the
# scores into the top blob's `diff` and runs backward to the image. For the class score the objective
# is $S_c$ and its gradient is one-hot at $c$:

# %%
figures.show_source(class_score, input_gradient)

# %% [markdown]
# **The update.** Gradient ascent on $f(I) = S_c(I) - \lambda \lVert I\rVert^2$ with step size $\eta$:
#
# $$I \leftarrow I + \eta\,\nabla f = I + \eta\left(g - 2\lambda I\right) = (1 - 2\lambda\eta)\, I + \eta\, g,
# \qquad g = \frac{\partial S_c}{\partial I}.$$
#
# Scores and gradients of different nets differ by orders of magnitude, so the step is set in pixels:
# $\eta = \text{learning\_rate} / \operatorname{rms}(g)$ moves the image by `learning_rate` pixel units
# (RMS) per step, and the L2 term becomes a decay by the fraction `l2_decay` $= 2\lambda\eta$ per step.
# At equilibrium the decay cancels the step, so the image's RMS settles near
# `learning_rate / l2_decay`. The loop then applies jitter (a random shift before the forward pass,
# undone on the gradient), Gaussian blur every few steps, and clipping to the valid pixels:

# %%
figures.show_source(ascent_step, class_model_visualization)

# %% [markdown]
# Classes to visualise: for ImageNet, six of those in the paper's figure 1; for a small model, all of its
# classes (up to eight). Jitter is set relative to the input size.

# %%
if not CLASS_NAMES:
    CLASS_NAMES = (["dumbbell", "cup", "dalmatian", "bell pepper", "lemon", "goose"] if model.name == "bvlc_alexnet"
                   else [model.label(i) for i in range(min(8, len(model.classes)))])
size = model.input_shape[-1]
settings = dict(iterations=ITERATIONS, learning_rate=LEARNING_RATE, l2_decay=L2_DECAY, jitter=max(1, size // 50),
                blur_sigma=0.5, blur_every=4, bounds=model.bounds, seed=0)
print(settings | {"bounds": "model.bounds"})

visualizations = {}
for name in CLASS_NAMES:
    visualizations[name] = class_model_visualization(model.net, model.class_index(name), **settings)
    v = visualizations[name]
    print(f"{name:>14}: score {v.scores[0]:7.2f} -> {v.scores[-1]:7.2f}, ||I|| {v.norms[-1]:8.1f}")

# %% [markdown]
# The images, deprocessed (mean added back, BGR to RGB) and contrast-stretched for display: the L2 term
# keeps them close to the mean image, so unstretched they would look almost uniformly grey.

# %%
pictures = [figures.stretch(model.deprocess(v.image)) for v in visualizations.values()]
titles = [f"{name}\nS_c = {v.scores[-1]:.1f}" for name, v in visualizations.items()]
fig = figures.picture_grid(pictures, titles, cols=min(4, len(pictures)))
print(figures.save_figure(fig, "class-model-visualizations", out))
plt.show()

# %% [markdown]
# How the ascent went: the class score rises, and the L2 term holds the image's norm down. For comparison,
# the first class again without the L2 term (`l2_decay=0`): the norm grows further.

# %%
first = CLASS_NAMES[0]
free = class_model_visualization(model.net, model.class_index(first), **(settings | {"l2_decay": 0.0}))
fig, (ax_s, ax_n) = plt.subplots(1, 2, figsize=(11, 3.5))
for name, v in visualizations.items():
    ax_s.plot(v.scores, label=name)
    ax_n.plot(v.norms, label=name)
ax_n.plot(free.norms, "k--", label=f"{first}, no L2")
ax_s.set(xlabel="iteration", ylabel="class score $S_c$", title="score")
ax_n.set(xlabel="iteration", ylabel="$\\|I\\|_2$", title="image norm")
ax_n.legend(fontsize=7)
print(figures.save_figure(fig, "class-model-history", out))
plt.show()
print(f"final norm of '{first}': {visualizations[first].norms[-1]:.1f} with L2, {free.norms[-1]:.1f} without")

# %% [markdown]
# What to look for: the images are not pictures of the class, but they show the parts the net keys on,
# repeated at several places and scales (e.g. dog heads and spots for "dalmatian", yellow ovals for
# "lemon"). Without the blur and jitter the same ascent produces noise-like patterns with equally high
# scores, an early hint of what `breaking-convnets.ipynb` exploits.
