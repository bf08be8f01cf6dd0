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
# # Breaking ConvNets: fooling images
#
# * Szegedy et al., *Intriguing properties of neural networks*, ICLR 2014
#   ([arXiv:1312.6199](https://arxiv.org/abs/1312.6199)): an imperceptibly small, targeted change makes
#   a net misclassify an image it got right.
# * Goodfellow, Shlens and Szegedy, *Explaining and Harnessing Adversarial Examples*, ICLR 2015
#   ([arXiv:1412.6572](https://arxiv.org/abs/1412.6572)): the cause is the nets' near-linearity in
#   high dimensions: many tiny changes, each aligned with the gradient, add up.
# * Madry et al., *Towards Deep Learning Models Resistant to Adversarial Attacks*, ICLR 2018
#   ([arXiv:1706.06083](https://arxiv.org/abs/1706.06083)): projected gradient descent (PGD), the
#   standard yardstick, used below to measure how small a perturbation suffices.
#
# Given an image $x_0$ and a target class $t$, find $x$ close to $x_0$ that the net assigns to $t$:
#
# $$\min_x \; L(x, t) + \frac{\lambda}{2} \lVert x - x_0 \rVert_2^2$$
#
# with $L$ the softmax cross-entropy of the net's scores. The descent runs until $t$ is the top-1 class
# **with probability at least `CONFIDENCE`** (0.5), not just by a hair, and clips to valid pixels (the
# box of Szegedy et al.'s box-constrained L-BFGS).

# %% tags=["parameters"]
import os

MODEL = os.environ.get("Q3_MODEL", "auto")  # auto | bvlc_alexnet | demo | path/to/model.json
GPU = os.environ.get("GPU", "")  # "" runs on the CPU; a device id needs a CUDA build of Caffe
FAST = os.environ.get("Q3_FAST", "") == "1"  # tiny iteration counts (the tests run the notebooks this way)
OUT = os.environ.get("Q3_OUT", "")  # where figures go; "" means results/q3
IMAGES = 3  # example images; the batch evaluation tries every target on each
FOOL_ITERATIONS = 10 if FAST else 150
LEARNING_RATE = 0.5  # RMS change per step, in pixel units (0..255)
L2_DECAY = 0.0  # fraction of the perturbation removed per step: the lambda term
CONFIDENCE = 0.5  # the target must be at least this probable
MAX_CHANGE = 16  # pixels may move at most this far from the original (0..255); None: no limit
PGD = dict(start=2, iterations=2 if FAST else 20, refine=0 if FAST else 2, largest=2 if FAST else 128)  # pixels
TARGET_NAMES = []  # [] picks defaults below

# %%
import sys
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "q3_visualize_break").is_dir())
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")  # keep Caffe's net set-up log out of the notebook

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from q3_visualize_break import figures
from q3_visualize_break.fooling import evaluate_fooling, fooling_image, fooling_step, pgd_attack
from q3_visualize_break.gradients import cross_entropy, forward_scores, input_gradient, top_k
from q3_visualize_break.images import example_images
from q3_visualize_break.loading import start_notebook

model, out = start_notebook(MODEL, GPU, OUT)

# %% [markdown]
# ## The completed code
#
# **Loss gradient into the top blob.** The cross-entropy is computed in numpy on the scores
# (`fc8`); its gradient with respect to the scores is $p - \mathbb{1}_t$, which `input_gradient`
# writes into the top blob's `diff` before the backward pass to the image:

# %%
figures.show_source(cross_entropy, input_gradient)

# %% [markdown]
# **The update.** Gradient descent on $f(x) = L(x, t) + \frac{\lambda}{2}\lVert x - x_0\rVert^2$ with step $\eta$:
#
# $$x \leftarrow x - \eta\left(g + \lambda (x - x_0)\right)
#   = x_0 + (1 - \lambda\eta)(x - x_0) - \eta\, g, \qquad g = \frac{\partial L}{\partial x}.$$
#
# As in the class visualisation, $\eta = \text{learning\_rate}/\operatorname{rms}(g)$ fixes the step in
# pixel units, and `l2_decay` $= \lambda\eta$ is the fraction of the perturbation the L2 term removes
# per step. Components that would push a pixel beyond 0 or 255 are dropped before the step, and the
# result is clipped to the valid pixels and, with `MAX_CHANGE`, to a box of $\pm$`MAX_CHANGE` pixel
# values around $x_0$ (so that no single pixel changes visibly; the box plays the role of the box
# constraint in Szegedy et al.'s L-BFGS):

# %%
figures.show_source(fooling_step, fooling_image)

# %% [markdown]
# The yardstick, targeted PGD in an L-inf ball of radius $\epsilon$: signed gradient steps, projected back
# into the ball and the valid pixels. The evaluation below searches the smallest $\epsilon$ at which it
# reaches the same goal ($p_t \ge$ `CONFIDENCE`).

# %%
figures.show_source(pgd_attack)

# %%
examples = example_images(model, IMAGES)
if not TARGET_NAMES:
    TARGET_NAMES = (["ostrich", "lemon", "goldfish"] if model.name == "bvlc_alexnet"
                    else [model.label(i) for i in range(min(3, len(model.classes)))])
targets = [model.class_index(name) for name in TARGET_NAMES]
fool = dict(learning_rate=LEARNING_RATE * model.pixel_scale, l2_decay=L2_DECAY, max_iterations=FOOL_ITERATIONS,
            confidence=CONFIDENCE, bounds=model.bounds,
            max_change=None if MAX_CHANGE is None else MAX_CHANGE * model.pixel_scale)
print("targets:", TARGET_NAMES, "| settings:", fool | {"bounds": "model.bounds"})

# %% [markdown]
# One fooling image per example: each to a target it is not already. Shown: the original, the
# perturbation amplified (mid-grey is no change; the gain is chosen so the largest change just fills
# the range), and the fooling image, with the net's top-5 before and after.

# %%
results = []
for i, example in enumerate(examples):
    x0 = model.preprocess(example.image)
    before = forward_scores(model.net, x0)
    target = next(t for t in targets[i % len(targets):] + targets if t != int(np.argmax(before)))
    r = fooling_image(model.net, x0, target, **fool)
    results.append((example, x0, before, r))
    print(f"{example.name}: {model.label(r.original_class)} -> {model.label(target)}: "
          f"{'fooled' if r.fooled else 'not fooled'} after {r.iterations} steps (stopped: {r.stopped}), "
          f"p_target {r.target_probs[-1]:.3f}, max |r| = {np.abs(r.perturbation).max() / model.pixel_scale:.1f}/255")

fig, axes = plt.subplots(len(results), 3, figsize=(11, 3.8 * len(results)), squeeze=False)
for (_, x0, before, r), (ax_o, ax_p, ax_f) in zip(results, axes, strict=True):
    after = forward_scores(model.net, r.image)
    linf = np.abs(r.perturbation).max() / model.pixel_scale
    gain = max(1.0, round(127 / max(linf, 1e-6)))
    ax_o.imshow(model.deprocess(x0))
    ax_o.set_title("original\n" + figures.top_k_text(top_k(before, model.classes, 5)), fontsize=7)
    ax_p.imshow(figures.perturbation_picture(model, x0, r.image, gain=gain))
    ax_p.set_title(f"perturbation x{gain:.0f}\n||r||_2 = {r.distances[-1]:.0f}, max |r| = {linf:.1f}/255",
                   fontsize=7)
    ax_f.imshow(model.deprocess(r.image))
    ax_f.set_title(f"fooling image ({model.label(r.target_class)})\n" +
                   figures.top_k_text(top_k(after, model.classes, 5)), fontsize=7)
    for ax in (ax_o, ax_p, ax_f):
        ax.axis("off")
fig.tight_layout()
print(figures.save_figure(fig, "fooling-images", out))
plt.show()

# %% [markdown]
# The descent: the cross-entropy falls, the target's probability rises, and the distance from the
# original grows only as far as needed. A saved fooling image is rounded to 8-bit pixels; the last
# line checks whether it still fools the net after that.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
for example, _, _, r in results:
    axes[0].plot(r.losses, label=example.name[:30])
    axes[1].plot(r.target_probs)
    axes[2].plot(r.distances)
axes[0].set(xlabel="iteration", title="cross-entropy L(x, target)")
axes[1].set(xlabel="iteration", title="target probability")
axes[2].set(xlabel="iteration", title="$\\|x - x_0\\|_2$ (net input units)")
axes[0].legend(fontsize=7)
print(figures.save_figure(fig, "fooling-history", out))
plt.show()

for example, _, _, r in results:
    rounded = model.preprocess(np.round(model.deprocess(r.image) * 255).astype(np.uint8))
    top1 = int(np.argmax(forward_scores(model.net, rounded)))
    print(f"{example.name}: after rounding to 8 bits the top-1 is {model.label(top1)}")

# %% [markdown]
# ## How small? Every target on every image, against PGD
#
# Success rate (target top-1 with $p_t \ge$ `CONFIDENCE`), median steps, median target probability and
# the median size of the perturbation in pixel units (0..255), over all (image, target) pairs; in the
# same run, the smallest L-inf budget at which PGD reaches the same goal. Written as a table
# (markdown and CSV) next to the figures.

# %%
evaluation = evaluate_fooling(model, {e.name: e.image for e in examples}, targets, pgd=PGD, **fool)
for path in evaluation.write(out, "fooling-evaluation"):
    print(path)
display(Markdown(evaluation.markdown()))
s = evaluation.summary
print(f"success: ours {s['success_rate']:.0%} (within +-{MAX_CHANGE}/255), PGD {s['pgd_success_rate']:.0%}; median "
      f"L-inf of successful fooling: ours {s['median_linf']:.1f}/255, PGD {s['median_pgd_linf']:.1f}/255; median "
      f"target probability (ours) {s['median_target_prob']:.2f}")
if MAX_CHANGE is not None and not s["median_pgd_linf"] <= MAX_CHANGE:
    print(f"Plainly: this model is NOT fooled imperceptibly. Even PGD needs a median {s['median_pgd_linf']:.0f}/255 "
          f"per pixel for p_target >= {CONFIDENCE}, more than the {MAX_CHANGE}/255 budget, so ours fails where the "
          "budget is too small. A small net on grey images with black backgrounds has few pixels to spread a change "
          "over; the imperceptible effect of Szegedy et al. shows on ImageNet AlexNet (make q3 with its weights).")

# %% [markdown]
# Reading the numbers: the L2-regularised descent minimises the *L2* size of the change, so it may
# concentrate it on few pixels (a large L-inf); PGD spreads it evenly, which is what "imperceptible"
# means per pixel. Goodfellow et al. explain why small budgets suffice: a change of $\epsilon$ per pixel
# aligned with the weights moves a linear score by $\epsilon \lVert w \rVert_1$, which grows with the
# number of pixels. A small net on grey Fashion-MNIST images, with a black background that can only get
# brighter, has far fewer pixels to spread the change over than a 227x227 colour photograph.
