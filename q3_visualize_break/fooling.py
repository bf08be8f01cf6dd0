"""Fooling images: a small targeted change that makes the net see another class.

Szegedy et al. (ICLR 2014) find the smallest r such that the net assigns x0 + r to a chosen class by
minimising  L(x, y_target) + lambda/2 * ||x - x0||^2  (L: softmax cross-entropy); Goodfellow et al.
(ICLR 2015) explain why so little suffices (the nets are nearly linear in their input); Nguyen et al.
(CVPR 2015) fool them from images that look like nothing at all. Here by gradient descent, stopped as
soon as the target is the top-1 class (and, optionally, at least `confidence` probable):

    x <- x0 + (1 - l2_decay) * (x - x0) - learning_rate * g / rms(g),   g = dL/dx

a descent step on the objective with step size eta = learning_rate / rms(g) and l2_decay = lambda * eta
(the same reading of the L2 term as in class_model.py), then clipping to the valid pixels.
"""

import csv
import io
from dataclasses import dataclass

import numpy as np

from q3_visualize_break.gradients import (
    check_class,
    check_image,
    cross_entropy,
    input_gradient,
    rms_normalized,
    softmax,
    within_bounds,
)


@dataclass
class FoolingResult:
    image: np.ndarray  # (C, H, W) the fooling image, net input units
    perturbation: np.ndarray  # image - original, net input units
    original_class: int  # the net's top-1 for the original
    target_class: int
    fooled: bool  # the target is top-1 (and confident enough) at the end
    iterations: int  # steps taken
    stopped: str  # why it stopped: "fooled", "iteration cap" or "zero gradient" (dead ReLUs: no direction)
    losses: np.ndarray  # cross-entropy -log p_target per iteration (the last entry: the returned image)
    target_probs: np.ndarray  # p_target per iteration
    distances: np.ndarray  # ||x - x0||_2 per iteration, net input units


def fooling_image(net, image, target_class, *, learning_rate=0.5, l2_decay=0.0, max_iterations=100,
                  confidence=None, bounds=None) -> FoolingResult:
    """Change net input `image` (C, H, W) a little until the net's top-1 is `target_class`.

    learning_rate   RMS change per step, in net input units (pixel units for raw_scale 255)
    l2_decay        fraction of the perturbation removed per step (the lambda term); 0 turns it off
    max_iterations  give up after this many steps (fooled=False)
    confidence      also require p_target >= confidence; None: top-1 is enough
    bounds          (low, high) to clip to after each step, e.g. model.bounds; None: no clipping
    """
    x0 = check_image(net, image)
    target_class = check_class(net, target_class)
    if learning_rate <= 0 or not 0 <= l2_decay < 1 or max_iterations < 0:
        raise ValueError(f"need learning_rate > 0, 0 <= l2_decay < 1, max_iterations >= 0; got {learning_rate}, "
                         f"{l2_decay}, {max_iterations}")
    if confidence is not None and not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must lie strictly between 0 and 1 (or be None: top-1 suffices)")
    objective = cross_entropy(target_class)
    x = x0.copy()
    losses, probs, distances = [], [], []
    original_class = None
    fooled, stopped = False, "iteration cap"
    for it in range(max_iterations + 1):
        loss, grad, scores = input_gradient(net, x, objective)
        p = softmax(scores)
        original_class = int(np.argmax(scores)) if original_class is None else original_class
        losses.append(loss)
        probs.append(float(p[target_class]))
        distances.append(float(np.linalg.norm(x - x0)))
        fooled = int(np.argmax(scores)) == target_class and (confidence is None or p[target_class] >= confidence)
        if fooled or not grad.any():
            stopped = "fooled" if fooled else "zero gradient"
            break
        if it == max_iterations:
            break
        x = x0 + (1 - l2_decay) * (x - x0) + learning_rate * rms_normalized(within_bounds(-grad, x, bounds))
        if bounds is not None:
            x = np.clip(x, *bounds)
        x = x.astype(np.float32, copy=False)
    return FoolingResult(x, x - x0, original_class, target_class, bool(fooled), len(losses) - 1, stopped,
                         np.array(losses), np.array(probs), np.array(distances))


@dataclass
class FoolingEvaluation:
    rows: list  # one dict per (image, target) attempt
    summary: dict  # attempts, skipped, success_rate, median_iterations, median_l2, median_linf

    COLUMNS = ("image", "original", "target", "fooled", "stopped", "iterations", "target_prob", "l2", "linf")

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def markdown(self) -> str:
        s = self.summary
        lines = [
            f"Fooling {s['images']} images x {s['targets']} targets: {s['attempts']} attempts "
            f"({s['skipped']} skipped: the target already was the top-1).",
            "",
            "| success rate | median iterations | median L2 | median Linf |",
            "|---|---|---|---|",
            f"| {s['success_rate']:.0%} | {fmt(s['median_iterations'])} | {fmt(s['median_l2'])} | "
            f"{fmt(s['median_linf'])} |",
            "",
            "Medians over the successful attempts; L2 and Linf of the perturbation in pixel units (0..255).",
            "",
            "| " + " | ".join(self.COLUMNS) + " |",
            "|" + "---|" * len(self.COLUMNS),
        ]
        lines += ["| " + " | ".join(fmt(r[c]) for c in self.COLUMNS) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def write(self, folder, stem="fooling"):
        """`stem`.md and `stem`.csv in `folder`, each written atomically; returns both paths."""
        from pathlib import Path

        from tools.fileio import write_text

        folder = Path(folder)
        return write_text(folder / f"{stem}.md", self.markdown()), write_text(folder / f"{stem}.csv", self.csv())


def fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def evaluate_fooling(model, images, targets, **fooling_kwargs) -> FoolingEvaluation:
    """Try every target on every image: `images` maps names to pictures (H, W, 3) in [0, 1] (or to net inputs
    (C, H, W)); `targets` lists class indices. Attempts whose target already is the top-1 are skipped.
    `fooling_kwargs` go to `fooling_image` (bounds default to the model's valid pixels)."""
    from q3_visualize_break.gradients import forward_scores
    from q3_visualize_break.images import pixel_scale

    fooling_kwargs.setdefault("bounds", model.bounds)
    per_pixel = pixel_scale(model.transformer, model.input_name)
    shape = model.input_shape
    rows, skipped = [], 0
    for name, image in images.items():
        x = np.asarray(image, np.float32) if np.shape(image) == shape else model.preprocess(image)
        top1 = int(np.argmax(forward_scores(model.net, x)))
        for target in targets:
            if check_class(model.net, target) == top1:
                skipped += 1
                continue
            r = fooling_image(model.net, x, target, **fooling_kwargs)
            delta = r.perturbation / per_pixel
            rows.append(dict(image=name, original=model.label(top1), target=model.label(target), fooled=r.fooled,
                             stopped=r.stopped, iterations=r.iterations, target_prob=float(r.target_probs[-1]),
                             l2=float(np.linalg.norm(delta)), linf=float(np.abs(delta).max())))
    good = [r for r in rows if r["fooled"]]

    def median(key):
        return float(np.median([r[key] for r in good])) if good else float("nan")

    summary = dict(images=len(images), targets=len(targets), attempts=len(rows), skipped=skipped,
                   success_rate=len(good) / len(rows) if rows else float("nan"),
                   median_iterations=median("iterations"), median_l2=median("l2"), median_linf=median("linf"))
    return FoolingEvaluation(rows, summary)
