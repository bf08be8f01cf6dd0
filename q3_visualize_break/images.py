"""Pictures in and out of the net: caffe.io.Transformer both ways, valid pixel bounds, example images.

A picture is an (H, W, 3) RGB array in [0, 1] (what caffe.io.load_image returns; uint8 and grey are
accepted and converted). The net sees (C, H, W): resized, BGR, times raw_scale, minus the mean.
`deprocess` undoes `preprocess` exactly, so optimised images are shown and saved in true colours.
"""

from dataclasses import dataclass

import numpy as np


def make_transformer(input_shape, mean_bgr, raw_scale=255.0, input_name="data"):
    """A caffe.io.Transformer: HWC -> CHW, RGB -> BGR, [0, 1] -> [0, raw_scale], minus the per-channel mean."""
    import caffe.io

    channels = input_shape[1]
    mean_bgr = np.asarray(mean_bgr, np.float32).reshape(-1)
    if mean_bgr.size != channels:
        raise ValueError(f"the mean has {mean_bgr.size} values but the input '{input_name}' has {channels} channels: "
                         "give one mean per channel")
    t = caffe.io.Transformer({input_name: tuple(input_shape)})
    t.set_transpose(input_name, (2, 0, 1))
    if channels == 3:
        t.set_channel_swap(input_name, (2, 1, 0))  # pictures are RGB, Caffe models were trained on BGR
    t.set_raw_scale(input_name, float(raw_scale))
    t.set_mean(input_name, mean_bgr)
    return t


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


def preprocess(transformer, image, input_name="data") -> np.ndarray:
    """A picture -> the net's input (C, H, W), resized to the net's input size."""
    return transformer.preprocess(input_name, as_rgb(image))


def deprocess(transformer, x, input_name="data", clip=True) -> np.ndarray:
    """The net's input (C, H, W) -> an RGB picture (H, W, 3); clipped to [0, 1] for display unless clip=False."""
    x = np.asarray(x, np.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"expected a net input (C, H, W), got shape {x.shape}")
    rgb = transformer.deprocess(input_name, x)
    return np.clip(rgb, 0.0, 1.0) if clip else rgb


def pixel_scale(transformer, input_name="data") -> float:
    """Net input units per pixel unit (0..255): raw_scale / 255 times the input scale."""
    raw = transformer.raw_scale.get(input_name) or 1.0
    return raw / 255.0 * (transformer.input_scale.get(input_name) or 1.0)


def pixel_bounds(transformer, input_name="data"):
    """(low, high), each (C, 1, 1): where pixels 0 and 255 land in net input units, per channel."""
    channels = transformer.inputs[input_name][1]
    zero = np.zeros((channels, 1, 1), np.float32)
    mean = transformer.mean.get(input_name)
    mean = zero if mean is None else np.asarray(mean, np.float32).reshape(channels, -1).mean(axis=1)[:, None, None]
    scale = transformer.input_scale.get(input_name) or 1.0
    raw = transformer.raw_scale.get(input_name) or 1.0
    return (zero - mean) * scale, (zero + raw - mean) * scale


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
