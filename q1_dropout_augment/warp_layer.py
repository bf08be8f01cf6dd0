"""Random geometric warps of each TRAIN batch, as a Caffe `Python` layer (in the spirit of caffe-rta).

Each image gets its own random rotation, shear, scale and perspective distortion about its centre,
resampled bilinearly; pixels that come from outside the image are 0, which after mean subtraction is
the mean colour. Labels are untouched (the layer only rewrites the data blob, in place).

    layer { type: "Python" bottom: "data" top: "data"
            python_param { module: "q1_dropout_augment.warp_layer" layer: "RandomWarp"
                           param_str: '{"rotation": 12, "shear": 0.12, "scale": [0.9, 1.1],
                                        "perspective": 0.06, "seed": 1}' } }
"""

import json

import caffe
import numpy as np
from scipy.ndimage import map_coordinates


def random_homography(rng, height, width, rotation=0.0, shear=0.0, scale=(1.0, 1.0), perspective=0.0):
    """A 3x3 matrix mapping output pixel (x, y, 1) to input coordinates, centred on the image."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    angle = np.deg2rad(rng.uniform(-rotation, rotation))
    s = rng.uniform(*scale)
    k = rng.uniform(-shear, shear)
    # Output -> input: undo the forward warp (scale, shear, rotate), so invert them in reverse order.
    rot = np.array([[np.cos(angle), np.sin(angle), 0], [-np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    shr = np.array([[1, -k, 0], [0, 1, 0], [0, 0, 1]])
    scl = np.diag([1 / s, 1 / s, 1])
    # Perspective: a small random tilt, in units of the image size.
    persp = np.eye(3)
    persp[2, :2] = rng.uniform(-perspective, perspective, size=2) / np.array([width, height])
    to_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    back = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]])
    return back @ persp @ scl @ shr @ rot @ to_centre


def warp(image_chw, matrix):
    """Resample a CHW float image through `matrix` (output pixel -> input coordinates), bilinear, zero outside."""
    c, h, w = image_chw.shape
    ys, xs = np.mgrid[0:h, 0:w]
    pts = matrix @ np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])
    src_x, src_y = pts[0] / pts[2], pts[1] / pts[2]
    out = np.empty_like(image_chw)
    for ch in range(c):
        out[ch] = map_coordinates(image_chw[ch], [src_y, src_x], order=1, mode="constant", cval=0.0).reshape(h, w)
    return out


class RandomWarp(caffe.Layer):
    def setup(self, bottom, top):
        params = json.loads(self.param_str or "{}")
        self.seed = params.pop("seed", None)
        unknown = set(params) - {"rotation", "shear", "scale", "perspective"}
        if unknown:
            raise ValueError(f"RandomWarp: unknown param_str keys {sorted(unknown)}")
        self.params = params
        self.rng = np.random.RandomState(self.seed)
        if len(bottom) != 1 or len(top) != 1:
            raise ValueError("RandomWarp takes one bottom (the data blob) and one top")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        batch = bottom[0].data
        _, _, h, w = batch.shape
        # Build the whole batch first: top may be the same blob as bottom (in place).
        warped = np.stack([warp(img, random_homography(self.rng, h, w, **self.params)) for img in batch])
        top[0].data[...] = warped

    def backward(self, top, propagate_down, bottom):
        pass  # it sits on the data layer: nothing below it learns
