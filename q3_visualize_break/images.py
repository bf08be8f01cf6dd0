"""Pictures for Q3: any picture as RGB in [0, 1], and example images to try a model on.

A picture is an (H, W, 3) RGB array in [0, 1] (what caffe.io.load_image returns; uint8 and grey are
accepted and converted). The Transformer that takes it into the net and back (BGR, raw scale, mean,
pixel bounds) is tools.transform's, used through `model.preprocess`, `model.deprocess`, `model.bounds`.
"""

from dataclasses import dataclass

import numpy as np


def as_rgb(image) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] from RGB/RGBA/grey, uint8 or float in [0, 1]."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image / 255.0
    image = image.astype(np.float32)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected a picture of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}: "
                         "net input arrays (C, H, W) are already preprocessed")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)  # grey: three identical channels
    return image[:, :, :3]


@dataclass
class ExampleImage:
    name: str
    image: np.ndarray  # (H, W, 3) RGB in [0, 1]
    label: int | None  # the true class in the model's classes, when known


SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")  # bundled with scikit-image: no download


def example_images(model, count=3) -> list:
    """Pictures to try the model on: scikit-image's photographs for ImageNet models, else Fashion-MNIST
    test images of the model's classes (grey, three identical channels), `count` of them."""
    if len(model.classes) == 1000:
        import skimage.data

        return [ExampleImage(n, as_rgb(getattr(skimage.data, n)()), None) for n in SKIMAGE_PHOTOS[:count]]
    from tools.datasets import load_fashion_mnist

    ds = load_fashion_mnist()
    wanted = [c.lower() for c in model.classes]
    known = [c.lower() for c in ds.classes]
    picked = []
    for i, label in enumerate(ds.test_labels):
        name = known[label]
        ours = wanted.index(name) if name in wanted else None
        if ours is None and any(w in known for w in wanted):
            continue  # the model knows some Fashion-MNIST classes: show only those
        if ours is not None and any(e.label == ours for e in picked) and len(picked) < len(wanted):
            continue  # one per class first
        picked.append(ExampleImage(f"fashion-mnist test #{i} ({ds.classes[label]})", as_rgb(ds.test_images[i, 0]),
                                   ours))
        if len(picked) == count:
            break
    return picked
