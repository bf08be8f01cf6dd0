"""The one caffe.io.Transformer recipe: pictures in and out of a Caffe net's input blob.

A picture is (H, W, 3) RGB in [0, 1] (what caffe.io.load_image returns). The net sees (C, H, W):
transposed, channels swapped to BGR (Caffe's models were trained on OpenCV's BGR), times `raw_scale`
(255: pixel units), minus the per-channel mean. `mean_bgr` reads that mean from a .binaryproto or
.npy mean file (a mean image is averaged per channel) or takes the values as given.
"""

from pathlib import Path

import numpy as np


def mean_bgr(mean_file=None, mean_value=None, channels=3) -> np.ndarray:
    """Per-channel (BGR) mean in raw units: `mean_value` as given, else from a mean .binaryproto/.npy,
    else zeros."""
    if mean_value is not None:
        mean = np.asarray(mean_value, np.float32).reshape(-1)
    elif mean_file is not None:
        from tools.lmdb_io import read_mean

        mean_file = Path(mean_file)
        if not mean_file.exists():
            raise FileNotFoundError(f"mean file {mean_file} not found: `python -m tools.get_ilsvrc_aux` fetches "
                                    "the ImageNet mean")
        mean = read_mean(mean_file)  # ValueError naming the file when it is not a BlobProto or .npy mean
        mean = mean.reshape(mean.shape[0], -1).mean(axis=1).astype(np.float32)
    else:
        mean = np.zeros(channels, np.float32)
    return mean


def make_transformer(input_shape, mean=None, raw_scale=255.0, input_name="data"):
    """caffe.io.Transformer for blob `input_name` of shape (N, C, H, W): HWC -> CHW, RGB -> BGR (3 channels),
    [0, 1] -> [0, raw_scale], minus the per-channel `mean` (values, one per channel; None: no mean)."""
    import caffe.io

    channels = input_shape[1]
    t = caffe.io.Transformer({input_name: tuple(input_shape)})
    t.set_transpose(input_name, (2, 0, 1))
    if channels == 3:
        t.set_channel_swap(input_name, (2, 1, 0))
    t.set_raw_scale(input_name, float(raw_scale))
    if mean is not None:
        mean = np.asarray(mean, np.float32).reshape(-1)
        if mean.size != channels:
            raise ValueError(f"the mean has {mean.size} values but the input '{input_name}' has {channels} channels: "
                             "give one mean per channel")
        t.set_mean(input_name, mean)
    return t


def preprocess(transformer, picture, input_name="data") -> np.ndarray:
    """An (H, W, C) picture in [0, 1] -> the net's input (C, H, W), resized to the blob's size."""
    return transformer.preprocess(input_name, np.asarray(picture, np.float32))


def deprocess(transformer, x, input_name="data", clip=True) -> np.ndarray:
    """The net's input (C, H, W) (or a batch of one) -> an RGB picture; clipped to [0, 1] unless clip=False."""
    x = np.asarray(x, np.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"expected a net input (C, H, W), got shape {x.shape}")
    picture = transformer.deprocess(input_name, x)
    return np.clip(picture, 0.0, 1.0) if clip else picture


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
