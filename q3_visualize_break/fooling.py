"""Fooling images: a small targeted change that makes the net see another class.

Szegedy et al. (ICLR 2014) find the smallest r such that the net assigns x0 + r to a chosen class by
minimising  L(x, y_target) + lambda/2 * ||x - x0||^2  (L: softmax cross-entropy); Goodfellow et al.
(ICLR 2015) explain why so little suffices (the nets are nearly linear in their input); Nguyen et al.
(CVPR 2015) fool them from images that look like nothing at all. Here by gradient descent, until the
target is the top-1 class *and* at least `confidence` probable (default 0.5: not a hair-thin win):

    x <- x0 + (1 - l2_decay) * (x - x0) - learning_rate * g / rms(g),   g = dL/dx

a descent step on the objective with step size eta = learning_rate / rms(g) and l2_decay = lambda * eta
(the same reading of the L2 term as in class_model.py), then clipping to the valid pixels. Both attacks
clip through the per-step regularisers of regularisers.py, and take further ones as the class
visualisation does.

`pgd_attack` is the yardstick: targeted projected gradient descent under an L-inf budget (Madry et al.
2018), and `minimal_pgd` the smallest budget on a doubling-then-bisecting grid at which it succeeds,
so each fooling image's L-inf can be set against what a standard minimal-perturbation attack needs.
"""

import csv
import io
from dataclasses import dataclass

import numpy as np

from q3_visualize_break import regularisers as steps
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


def fooling_step(x, x0, grad, learning_rate, l2_decay):
    """One descent step on L(x, t) + lambda/2 ||x - x0||^2: the perturbation shrinks by l2_decay = lambda eta,
    then x moves against the loss gradient with eta = learning_rate / rms(grad)."""
    return x0 + (1 - l2_decay) * (x - x0) - learning_rate * rms_normalized(grad)


def fooling_image(net, image, target_class, *, learning_rate=0.5, l2_decay=0.0, max_iterations=100,
                  confidence=0.5, bounds=None, max_change=None, regularisers=(), objective=None) -> FoolingResult:
    """Change net input `image` (C, H, W) a little until the net's top-1 is `target_class` with p >= confidence.

    learning_rate   RMS change per step, in net input units (pixel units for raw_scale 255)
    l2_decay        fraction of the perturbation removed per step (the lambda term); 0 turns it off
    max_iterations  give up after this many steps (fooled=False)
    confidence      also require p_target >= confidence (default 0.5); None: top-1 is enough
    bounds          (low, high) to clip to after each step, e.g. model.bounds; None: no clipping
    max_change      also keep every pixel within +-max_change of the original (net input units): a box around
                    x0 that keeps the change invisible per pixel; None: no such limit
    regularisers    further callables (x, iteration) -> x (regularisers.py), run after those two clips
    objective       what to descend (gradients.Objective), default cross_entropy(target_class); the stopping test
                    stays the target's probability
    """
    x0 = check_image(net, image)
    target_class = check_class(net, target_class)
    if learning_rate <= 0 or not 0 <= l2_decay < 1 or max_iterations < 0:
        raise ValueError(f"need learning_rate > 0, 0 <= l2_decay < 1, max_iterations >= 0; got {learning_rate}, "
                         f"{l2_decay}, {max_iterations}")
    if confidence is not None and not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must lie strictly between 0 and 1 (or be None: top-1 suffices)")
    objective = cross_entropy(target_class) if objective is None else objective
    after_step = [*([steps.clip_around(x0, max_change)] if max_change is not None else []),
                  *([steps.clip_to(bounds)] if bounds is not None else []), *regularisers]
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
        x = steps.apply(after_step, fooling_step(x, x0, -within_bounds(-grad, x, bounds), learning_rate, l2_decay), it)
    return FoolingResult(x, x - x0, original_class, target_class, bool(fooled), len(losses) - 1, stopped,
                         np.array(losses), np.array(probs), np.array(distances))


@dataclass
class PGDResult:
    image: np.ndarray  # (C, H, W) net input units
    epsilon: float  # the L-inf budget, net input units
    fooled: bool  # target top-1 with p >= confidence
    iterations: int
    target_prob: float

    @property
    def linf(self) -> float:
        return self.epsilon


def pgd_attack(net, image, target_class, epsilon, *, iterations=20, step=None, confidence=0.5,
               bounds=None, regularisers=(), objective=None) -> PGDResult:
    """Targeted projected gradient descent (Madry et al. 2018) in the L-inf ball of radius `epsilon` (net input
    units): x <- clip(x - step_k * sign(dL/dx), x0 - epsilon, x0 + epsilon), then to `bounds`, then the further
    `regularisers`; stops when the target is top-1 with p >= confidence. The step falls linearly from 2 * `step`
    to 0 (mean `step`, default 2.5 * epsilon / iterations), so that late steps do not jump back and forth across
    the goal. `objective`: what to descend, default cross_entropy(target_class)."""
    x0 = check_image(net, image)
    target_class = check_class(net, target_class)
    step = 2.5 * epsilon / iterations if step is None else step
    objective = cross_entropy(target_class) if objective is None else objective
    after_step = [steps.clip_around(x0, epsilon), *([steps.clip_to(bounds)] if bounds is not None else []),
                  *regularisers]
    x = x0.copy()
    for it in range(iterations + 1):
        _, grad, scores = input_gradient(net, x, objective)
        p = softmax(scores)[target_class]
        if int(np.argmax(scores)) == target_class and (confidence is None or p >= confidence):
            return PGDResult(x, float(np.abs(x - x0).max()), True, it, float(p))
        if it == iterations:
            break
        x = steps.apply(after_step, x - 2 * step * (1 - it / iterations) * np.sign(grad), it)
    return PGDResult(x, float(epsilon), False, iterations, float(p))


def minimal_pgd(net, image, target_class, *, start=1.0, largest=128.0, refine=3, **pgd_kwargs) -> PGDResult:
    """The smallest L-inf budget (net input units) at which `pgd_attack` succeeds: doubling from `start` up to
    `largest`, then `refine` bisection steps between the last failure and the first success. The result's
    `linf` is what the successful attack actually used; fooled=False when even `largest` does not suffice."""
    failed, found, eps = 0.0, None, start
    while eps <= largest:
        r = pgd_attack(net, image, target_class, eps, **pgd_kwargs)
        if r.fooled:
            found = r
            break
        failed, eps = eps, eps * 2
    if found is None:
        return r
    high = found.epsilon
    for _ in range(refine):
        mid = (failed + high) / 2
        r = pgd_attack(net, image, target_class, mid, **pgd_kwargs)
        if r.fooled:
            found, high = r, mid
        else:
            failed = mid
    return found


@dataclass
class FoolingEvaluation:
    rows: list  # one dict per (image, target) attempt
    summary: dict  # attempts, skipped, success_rate, median_iterations, median_l2, median_linf, median_target_prob,
    #                pgd_success_rate, median_pgd_linf

    COLUMNS = ("image", "original", "target", "fooled", "stopped", "iterations", "target_prob", "l2", "linf",
               "pgd_fooled", "pgd_linf")

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
            "| attack | success rate | median iterations | median target p | median L2 | median Linf |",
            "|---|---|---|---|---|---|",
            f"| ours (L2-regularised descent) | {s['success_rate']:.0%} | {fmt(s['median_iterations'])} | "
            f"{fmt(s['median_target_prob'])} | {fmt(s['median_l2'])} | {fmt(s['median_linf'])} |",
            f"| PGD, smallest L-inf budget | {fmt_rate(s['pgd_success_rate'])} | | | | {fmt(s['median_pgd_linf'])} |",
            "",
            "Success: the target is the top-1 class with probability at least the confidence margin. Medians over "
            "the successful attempts of each attack; L2 and Linf of the perturbation in pixel units (0..255).",
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


def fmt_rate(value) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.0%}"


def fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def evaluate_fooling(model, images, targets, pgd=None, **fooling_kwargs) -> FoolingEvaluation:
    """Try every target on every image: `images` maps names to pictures (H, W, 3) in [0, 1] (or to net inputs
    (C, H, W)); `targets` lists class indices. Attempts whose target already is the top-1 are skipped.
    `fooling_kwargs` go to `fooling_image` (bounds default to the model's valid pixels). `pgd`: None, or keyword
    arguments of `minimal_pgd` (in pixel units for start/largest) to measure the same attempts against PGD."""
    from q3_visualize_break.gradients import forward_scores

    fooling_kwargs.setdefault("bounds", model.bounds)
    per_pixel = model.pixel_scale
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
            row = dict(image=name, original=model.label(top1), target=model.label(target), fooled=r.fooled,
                       stopped=r.stopped, iterations=r.iterations, target_prob=float(r.target_probs[-1]),
                       l2=float(np.linalg.norm(delta)), linf=float(np.abs(delta).max()), pgd_fooled="",
                       pgd_linf=float("nan"))
            if pgd is not None:
                kw = dict(pgd, confidence=fooling_kwargs.get("confidence", 0.5), bounds=fooling_kwargs["bounds"])
                kw.update(start=kw.get("start", 1.0) * per_pixel, largest=kw.get("largest", 128.0) * per_pixel)
                m = minimal_pgd(model.net, x, target, **kw)
                row.update(pgd_fooled=m.fooled, pgd_linf=m.linf / per_pixel if m.fooled else float("nan"))
            rows.append(row)
    good = [r for r in rows if r["fooled"]]
    pgd_good = [r for r in rows if r["pgd_fooled"] is True]

    def median(key, among=good):
        return float(np.median([r[key] for r in among])) if among else float("nan")

    summary = dict(images=len(images), targets=len(targets), attempts=len(rows), skipped=skipped,
                   success_rate=len(good) / len(rows) if rows else float("nan"),
                   median_iterations=median("iterations"), median_l2=median("l2"), median_linf=median("linf"),
                   median_target_prob=median("target_prob"),
                   pgd_success_rate=(len(pgd_good) / len(rows) if rows and pgd is not None else float("nan")),
                   median_pgd_linf=median("pgd_linf", pgd_good))
    return FoolingEvaluation(rows, summary)
