"""What the notebooks show and save: the output folder, PNGs written atomically, display helpers.

Figures go to Q3_OUT (default results/q3, under TOOLKIT_RESULTS when that is set); a relative path
is taken from the repo root, so a notebook saves to the same place whatever folder it runs in.
"""

import os
from pathlib import Path

import numpy as np

from tools import paths
from tools.fileio import atomic_path


def output_dir(out=None) -> Path:
    """The folder for figures and tables: `out`, else $Q3_OUT, else results/q3; created if missing."""
    folder = Path(out or os.environ.get("Q3_OUT") or paths.RESULTS / "q3")
    folder = folder if folder.is_absolute() else paths.REPO / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_figure(fig, name: str, out=None, dpi=100) -> Path:
    """`fig` as `name`.png in the output folder, written atomically."""
    path = output_dir(out) / f"{name}.png"
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def stretch(picture) -> np.ndarray:
    """Contrast-stretch a picture to the full [0, 1] range, for display only.

    Optimised class images stay close to the mean image (the L2 term sees to that), so shown as they are
    they look almost uniformly grey.
    """
    picture = np.asarray(picture, np.float32)
    low, high = picture.min(), picture.max()
    return (picture - low) / (high - low) if high > low else np.zeros_like(picture)


def perturbation_picture(model, original, changed, gain=10.0) -> np.ndarray:
    """The difference of two net inputs as a picture: mid-grey is no change, amplified `gain` times."""
    delta = model.deprocess(changed, clip=False) - model.deprocess(original, clip=False)
    return np.clip(0.5 + gain * delta, 0.0, 1.0)


def show_source(*functions):
    """Display the source of `functions` as a code block: the notebooks show the very code they run (and the
    tests check), not a copy of it."""
    import inspect

    from IPython.display import Markdown, display

    for function in functions:
        display(Markdown(f"```python\n{inspect.getsource(function).rstrip()}\n```"))


def top_k_text(top) -> str:
    """Lines "name  probability" for `gradients.top_k` output, names shortened to their first synonym."""
    return "\n".join(f"{name.split(',')[0][:22]}  {p:.3f}" for _, name, p in top)


def picture_grid(pictures, titles, cols=4, size=2.6):
    """A figure with `pictures` (H, W, 3) in a grid, each titled, axes off."""
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(pictures) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, picture, title in zip(axes.ravel(), pictures, titles, strict=False):
        ax.imshow(picture)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
