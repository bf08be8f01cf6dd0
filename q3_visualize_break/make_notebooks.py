"""Write Q3's three notebooks from the cell texts below, without outputs.

    python -m q3_visualize_break.make_notebooks --write   # regenerate q3_visualize_break/*.ipynb
    python -m q3_visualize_break.make_notebooks --check   # exit 1 when a committed notebook differs

The notebooks are generated so that they are reviewed as code, and committed without outputs
(execution_count None, stable cell ids): `run_notebooks` executes copies into the results folder.
Edit the cells here, then --write.
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PARAMETERS = '''\
import os

MODEL = os.environ.get("Q3_MODEL", "auto")   # auto | bvlc_alexnet | demo | path/to/model.json
GPU = os.environ.get("GPU", "")              # "" runs on the CPU; a device id needs a CUDA build of Caffe
FAST = os.environ.get("Q3_FAST", "") == "1"  # tiny iteration counts (the tests run the notebooks this way)
OUT = os.environ.get("Q3_OUT", "")           # where figures go; "" means results/q3
'''

SETUP = '''\
import sys
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "q3_visualize_break").is_dir())
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")  # keep Caffe's net set-up log out of the notebook

import matplotlib.pyplot as plt

from q3_visualize_break import figures
from q3_visualize_break.models import load_model

model = load_model(MODEL, GPU)
out = figures.output_dir(OUT)
print(f"model: {model.name} on {model.device} (python: {sys.executable})")
print(model.description)
print(f"figures: {out}")
'''

CLASS_MODELS = [
    ("markdown", '''\
# Class model visualisation

Simonyan, Vedaldi and Zisserman, *Deep Inside Convolutional Networks: Visualising Image Classification
Models and Saliency Maps*, ICLR 2014 workshop ([arXiv:1312.6034](https://arxiv.org/abs/1312.6034)), section 2.

What image does the net think is most typical of a class? Look for the image $I$ that maximises the
class score $S_c(I)$ (the unnormalised output `fc8`, not the softmax probability, which could also
rise by lowering the other classes) with an L2 penalty that keeps the image close to the mean image:

$$I^* = \\arg\\max_I \\; S_c(I) - \\lambda \\lVert I \\rVert_2^2$$

The net's weights stay fixed; gradient ascent moves the pixels, with one backward pass per step
through a deploy that has no Softmax and sets `force_backward: true`. Left to itself the ascent
finds high-frequency patterns the net also responds to; the regularisers of Yosinski et al.
(*Understanding Neural Networks Through Deep Visualization*, ICML DL workshop 2015) make the images
readable: a random **jitter** of a few pixels before each step, a periodic **Gaussian blur**, and
**clipping** to valid pixel values. The L2 term is applied as a decay of the image by a fixed
fraction per step (`l2_decay`), with steps of a fixed RMS size; see `q3_visualize_break/class_model.py`.'''),
    ("parameters", PARAMETERS + '''\
ITERATIONS = 8 if FAST else 200
LEARNING_RATE = 1.0   # RMS change per step, in pixel units (0..255)
L2_DECAY = 0.02       # fraction the image shrinks by per step: the lambda term
CLASS_NAMES = []      # [] picks defaults below
'''),
    ("code", SETUP),
    ("markdown", '''\
Classes to visualise: for ImageNet, six of those in the paper's figure 1; for a small model, all of its
classes (up to eight). Jitter and blur are set relative to the input size.'''),
    ("code", '''\
from q3_visualize_break.class_model import class_model_visualization

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
    print(f"{name:>14}: score {v.scores[0]:7.2f} -> {v.scores[-1]:7.2f}, ||I|| {v.norms[-1]:8.1f}")'''),
    ("markdown", '''\
The images, deprocessed (mean added back, BGR to RGB) and contrast-stretched for display: the L2 term
keeps them close to the mean image, so unstretched they would look almost uniformly grey.'''),
    ("code", '''\
pictures = [figures.stretch(model.deprocess(v.image)) for v in visualizations.values()]
titles = [f"{name}\\nS_c = {v.scores[-1]:.1f}" for name, v in visualizations.items()]
fig = figures.picture_grid(pictures, titles, cols=min(4, len(pictures)))
print(figures.save_figure(fig, "class-model-visualizations", out))
plt.show()'''),
    ("markdown", '''\
How the ascent went: the class score rises, and the L2 term holds the image's norm down. For comparison,
the first class again without the L2 term (`l2_decay=0`): the norm grows further.'''),
    ("code", '''\
first = CLASS_NAMES[0]
free = class_model_visualization(model.net, model.class_index(first), **(settings | {"l2_decay": 0.0}))
fig, (ax_s, ax_n) = plt.subplots(1, 2, figsize=(11, 3.5))
for name, v in visualizations.items():
    ax_s.plot(v.scores, label=name)
    ax_n.plot(v.norms, label=name)
ax_n.plot(free.norms, "k--", label=f"{first}, no L2")
ax_s.set(xlabel="iteration", ylabel="class score $S_c$", title="score")
ax_n.set(xlabel="iteration", ylabel="$\\\\|I\\\\|_2$", title="image norm")
ax_n.legend(fontsize=7)
print(figures.save_figure(fig, "class-model-history", out))
plt.show()
print(f"final norm of '{first}': {visualizations[first].norms[-1]:.1f} with L2, {free.norms[-1]:.1f} without")'''),
    ("markdown", '''\
What to look for: the images are not pictures of the class, but they show the parts the net keys on,
repeated at several places and scales (e.g. dog heads and spots for "dalmatian", yellow ovals for
"lemon"). Without the blur and jitter the same ascent produces noise-like patterns with equally high
scores, an early hint of what `breaking-convnets.ipynb` exploits.'''),
]

SALIENCY = [
    ("markdown", '''\
# Image-specific class saliency maps

Simonyan, Vedaldi and Zisserman, ICLR 2014 workshop ([arXiv:1312.6034](https://arxiv.org/abs/1312.6034)),
section 3.

Which pixels of *this* image matter most for its class? Around a given image $I_0$ the class score is
nearly linear in the pixels, $S_c(I) \\approx w^T I + b$, with

$$w = \\left. \\frac{\\partial S_c}{\\partial I} \\right|_{I_0}$$

computed by one backward pass (the score's diff set to one-hot at class $c$, backpropagated to the
data blob). Pixels with a large $|w|$ change the score most; the map keeps, for each pixel, the
largest magnitude over the colour channels: $M_{ij} = \\max_k |w_{k,i,j}|$. No training, no
annotation: the same classification net localises the object, weakly (the paper goes on to seed a
GraphCut segmentation with it, not done here).'''),
    ("parameters", PARAMETERS + '''\
IMAGES = 3   # how many example images
'''),
    ("code", SETUP),
    ("markdown", '''\
Example images ship with installed packages: scikit-image's photographs for an ImageNet model,
Fashion-MNIST test images (grey, as three equal channels, resized to the net's input) for a small
one. Each map is for the class the net ranks first.'''),
    ("code", '''\
import numpy as np

from q3_visualize_break.gradients import forward_scores, top_k
from q3_visualize_break.images import example_images
from q3_visualize_break.saliency import overlay, saliency_map

rows = []
for example in example_images(model, IMAGES):
    x = model.preprocess(example.image)
    scores = forward_scores(model.net, x)
    c = int(np.argmax(scores))
    rows.append((example, x, c, saliency_map(model.net, x, c), top_k(scores, model.classes, 5)))
    print(f"{example.name}: top-1 {model.label(c)} (p = {top_k(scores, model.classes, 1)[0][2]:.3f})")'''),
    ("markdown", "Image, saliency map and overlay side by side (the image as the net sees it, resized to its input)."),
    ("code", '''\
fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.4 * len(rows)), squeeze=False)
for (example, x, c, sal, top), (ax_i, ax_s, ax_o) in zip(rows, axes, strict=True):
    picture = model.deprocess(x)
    ax_i.imshow(picture)
    ax_i.set_title(f"{example.name}\\n{figures.top_k_text(top[:2])}", fontsize=8)
    ax_s.imshow(sal, cmap="gray")
    ax_s.set_title(f"saliency for '{model.label(c)}'", fontsize=9)
    ax_o.imshow(overlay(picture, sal))
    ax_o.set_title("overlay", fontsize=9)
    for ax in (ax_i, ax_s, ax_o):
        ax.axis("off")
fig.tight_layout()
print(figures.save_figure(fig, "saliency-maps", out))
plt.show()'''),
    ("markdown", '''\
The map is a gradient, so it answers "which pixels would change the score most", not "which pixels
the decision was based on": it is noisy, and bright on edges and texture of the object. A class other
than the top-1 gives a different map of the same image:'''),
    ("code", '''\
example, x, c, _, top = rows[0]
other = top[1][0]
sal_other = saliency_map(model.net, x, other)
fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
for ax, sal, k in zip(axes, (rows[0][3], sal_other), (c, other), strict=True):
    ax.imshow(overlay(model.deprocess(x), sal))
    ax.set_title(f"saliency for '{model.label(k)}'", fontsize=9)
    ax.axis("off")
print(figures.save_figure(fig, "saliency-two-classes", out))
plt.show()'''),
]

BREAKING = [
    ("markdown", '''\
# Breaking ConvNets: fooling images

* Szegedy et al., *Intriguing properties of neural networks*, ICLR 2014
  ([arXiv:1312.6199](https://arxiv.org/abs/1312.6199)): an imperceptibly small, targeted change makes
  a net misclassify an image it got right.
* Goodfellow, Shlens and Szegedy, *Explaining and Harnessing Adversarial Examples*, ICLR 2015
  ([arXiv:1412.6572](https://arxiv.org/abs/1412.6572)): the cause is the nets' near-linearity in
  high dimensions: many tiny changes, each aligned with the gradient, add up.
* Nguyen, Yosinski and Clune, *Deep Neural Networks are Easily Fooled*, CVPR 2015
  ([arXiv:1412.1897](https://arxiv.org/abs/1412.1897)): images unrecognisable to people get
  classified with high confidence.

Given an image $x_0$ and a target class $t$, find $x$ close to $x_0$ that the net assigns to $t$:

$$\\min_x \\; L(x, t) + \\frac{\\lambda}{2} \\lVert x - x_0 \\rVert_2^2$$

with $L$ the softmax cross-entropy of the net's scores, computed in numpy; its gradient with respect
to the scores, $p - \\mathbb{1}_t$, is pushed back through the net to the pixels. Gradient descent
stops as soon as $t$ is the top-1 class (Szegedy et al. used box-constrained L-BFGS; clipping to valid
pixels plays the box here).'''),
    ("parameters", PARAMETERS + '''\
IMAGES = 3              # example images; the batch evaluation tries every target on each
FOOL_ITERATIONS = 10 if FAST else 200
LEARNING_RATE = 1.0     # RMS change per step, in pixel units (0..255)
TARGET_NAMES = []       # [] picks defaults below
'''),
    ("code", SETUP),
    ("code", '''\
import numpy as np

from q3_visualize_break.fooling import evaluate_fooling, fooling_image
from q3_visualize_break.gradients import forward_scores, top_k
from q3_visualize_break.images import example_images

examples = example_images(model, IMAGES)
if not TARGET_NAMES:
    TARGET_NAMES = (["ostrich", "lemon", "goldfish"] if model.name == "bvlc_alexnet"
                    else [model.label(i) for i in range(min(3, len(model.classes)))])
targets = [model.class_index(name) for name in TARGET_NAMES]
fool = dict(learning_rate=LEARNING_RATE, max_iterations=FOOL_ITERATIONS, bounds=model.bounds)
print("targets:", TARGET_NAMES, "| settings:", fool | {"bounds": "model.bounds"})'''),
    ("markdown", '''\
One fooling image per example: each to a target it is not already. Shown: the original, the
perturbation amplified ten times (mid-grey is no change), and the fooling image, with the net's top-5
before and after.'''),
    ("code", '''\
results = []
for i, example in enumerate(examples):
    x0 = model.preprocess(example.image)
    before = forward_scores(model.net, x0)
    target = next(t for t in targets[i % len(targets):] + targets if t != int(np.argmax(before)))
    r = fooling_image(model.net, x0, target, **fool)
    results.append((example, x0, before, r))
    print(f"{example.name}: {model.label(r.original_class)} -> {model.label(target)}: "
          f"{'fooled' if r.fooled else 'not fooled'} after {r.iterations} steps (stopped: {r.stopped}), "
          f"p_target {r.target_probs[-1]:.3f}")

fig, axes = plt.subplots(len(results), 3, figsize=(11, 3.8 * len(results)), squeeze=False)
for (_, x0, before, r), (ax_o, ax_p, ax_f) in zip(results, axes, strict=True):
    after = forward_scores(model.net, r.image)
    ax_o.imshow(model.deprocess(x0))
    ax_o.set_title("original\\n" + figures.top_k_text(top_k(before, model.classes, 5)), fontsize=7)
    ax_p.imshow(figures.perturbation_picture(model, x0, r.image, gain=10))
    ax_p.set_title(f"perturbation x10\\n||r||_2 = {r.distances[-1]:.0f}, max |r| = {np.abs(r.perturbation).max():.1f}",
                   fontsize=7)
    ax_f.imshow(model.deprocess(r.image))
    ax_f.set_title(f"fooling image ({model.label(r.target_class)})\\n" +
                   figures.top_k_text(top_k(after, model.classes, 5)), fontsize=7)
    for ax in (ax_o, ax_p, ax_f):
        ax.axis("off")
fig.tight_layout()
print(figures.save_figure(fig, "fooling-images", out))
plt.show()'''),
    ("markdown", '''\
The descent: the cross-entropy falls, the target's probability rises, and the distance from the
original grows only as far as needed. A saved fooling image is rounded to 8-bit pixels; the last
line checks whether it still fools the net after that.'''),
    ("code", '''\
fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
for example, _, _, r in results:
    axes[0].plot(r.losses, label=example.name[:30])
    axes[1].plot(r.target_probs)
    axes[2].plot(r.distances)
axes[0].set(xlabel="iteration", title="cross-entropy L(x, target)")
axes[1].set(xlabel="iteration", title="target probability")
axes[2].set(xlabel="iteration", title="$\\\\|x - x_0\\\\|_2$ (pixel units)")
axes[0].legend(fontsize=7)
print(figures.save_figure(fig, "fooling-history", out))
plt.show()

for example, _, _, r in results:
    rounded = model.preprocess(np.round(model.deprocess(r.image) * 255).astype(np.uint8))
    top1 = int(np.argmax(forward_scores(model.net, rounded)))
    print(f"{example.name}: after rounding to 8 bits the top-1 is {model.label(top1)}")'''),
    ("markdown", '''\
## How easily? Every target on every image

Success rate, median number of steps and the median size of the perturbation in pixel units (0..255),
over all (image, target) pairs; written as a table (markdown and CSV) next to the figures.'''),
    ("code", '''\
from IPython.display import Markdown, display

evaluation = evaluate_fooling(model, {e.name: e.image for e in examples}, targets, **fool)
for path in evaluation.write(out, "fooling-evaluation"):
    print(path)
display(Markdown(evaluation.markdown()))'''),
    ("markdown", '''\
For an ImageNet AlexNet the perturbations are typically a pixel value or two per pixel (RMS), far
below what one notices; Goodfellow et al. explain why: a change of $\\epsilon$ per pixel aligned with
the weights moves a linear score by $\\epsilon \\lVert w \\rVert_1$, which grows with the number of
pixels. A small net on Fashion-MNIST needs larger, visible changes: far fewer pixels, and a black
background that can only get brighter.'''),
]

NOTEBOOKS = {
    "class-model-visualizations.ipynb": CLASS_MODELS,
    "saliency-maps.ipynb": SALIENCY,
    "breaking-convnets.ipynb": BREAKING,
}


def build(cells, stem):
    """A notebook without outputs, with stable cell ids so regenerating changes nothing."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(cells):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(source)
        else:
            cell = nbformat.v4.new_code_cell(source)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]  # papermill's convention: values to override
        cell["id"] = f"{stem}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def notebook_text(name) -> str:
    import nbformat

    return nbformat.writes(build(NOTEBOOKS[name], Path(name).stem)) + "\n"


def write_notebooks(folder=HERE) -> list:
    from tools.fileio import write_text

    return [write_text(Path(folder) / name, notebook_text(name)) for name in NOTEBOOKS]


def stale_notebooks(folder=HERE) -> list:
    return [Path(folder) / n for n in NOTEBOOKS
            if not (Path(folder) / n).exists() or (Path(folder) / n).read_text() != notebook_text(n)]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m q3_visualize_break.make_notebooks",
                                 description="Write Q3's notebooks (without outputs) from the cells in this module.")
    ap.add_argument("--write", action="store_true", help=f"write {', '.join(NOTEBOOKS)} into {HERE}")
    ap.add_argument("--check", action="store_true", help="exit 1 when a committed notebook differs from the cells here")
    a = ap.parse_args(argv)
    if not (a.write or a.check):
        ap.print_help()
        return 0
    if a.write:
        for path in write_notebooks():
            print(path)
    if a.check:
        stale = stale_notebooks()
        for path in stale:
            print(f"stale: {path} (run `python -m q3_visualize_break.make_notebooks --write`)", file=sys.stderr)
        return 1 if stale else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
