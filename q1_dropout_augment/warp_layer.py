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


def random_homographies(rng, count, height, width, rotation=0.0, shear=0.0, scale=(1.0, 1.0), perspective=0.0):
    """count 3x3 matrices, each mapping output pixel (x, y, 1) to input coordinates, centred on the image.

    Drawn for the whole batch at once, in the order one image at a time would draw them (rotation, scale, shear,
    two perspective tilts): rng.uniform(low, high) is low + (high - low) * random_sample(), so the same seed gives
    the same warps, bit for bit, as drawing them image by image."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    u = rng.random_sample((count, 5))
    angle = np.deg2rad(-rotation + (rotation - -rotation) * u[:, 0])
    s = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    k = -shear + (shear - -shear) * u[:, 2]
    tilt = (-perspective + (perspective - -perspective) * u[:, 3:5]) / np.array([width, height])
    eye = np.broadcast_to(np.eye(3), (count, 3, 3))
    # Output -> input: undo the forward warp (scale, shear, rotate), so invert them in reverse order.
    rot, shr, scl, persp = eye.copy(), eye.copy(), eye.copy(), eye.copy()
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = np.cos(angle), np.sin(angle), -np.sin(angle), np.cos(angle)
    shr[:, 0, 1] = -k
    scl[:, 0, 0] = scl[:, 1, 1] = 1 / s
    # Perspective: a small random tilt, in units of the image size.
    persp[:, 2, :2] = tilt
    to_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    back = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]])
    return back @ persp @ scl @ shr @ rot @ to_centre


def warp(images, matrices):
    """Resample NCHW float images, each through its matrix (output pixel -> input coordinates), bilinear, zero
    outside. The coordinates of the whole batch in one product; the resampling one image plane at a time."""
    n, c, h, w = images.shape
    ys, xs = np.mgrid[0:h, 0:w]
    pts = matrices @ np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])
    src_x, src_y = pts[:, 0] / pts[:, 2], pts[:, 1] / pts[:, 2]
    out = np.empty_like(images)
    for i in range(n):
        for ch in range(c):
            out[i, ch] = map_coordinates(images[i, ch], [src_y[i], src_x[i]], order=1, mode="constant",
                                         cval=0.0).reshape(h, w)
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
        n, _, h, w = batch.shape
        # Build the whole batch first: top may be the same blob as bottom (in place).
        top[0].data[...] = warp(batch, random_homographies(self.rng, n, h, w, **self.params))

    def backward(self, top, propagate_down, bottom):
        pass  # it sits on the data layer: nothing below it learns
