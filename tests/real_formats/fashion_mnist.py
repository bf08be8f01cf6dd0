"""Fashion-MNIST's four files in their published format: gzipped IDX, at the real counts and image size.

Sources: Yann LeCun's MNIST page (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS FOR THE MNIST
DATABASE"), and the Fashion-MNIST README (https://github.com/zalandoresearch/fashion-mnist, "Get the
Data": the data "is stored in the same format as the original MNIST data"), which publishes

    train-images-idx3-ubyte.gz   60,000 images     train-labels-idx1-ubyte.gz   60,000 labels
    t10k-images-idx3-ubyte.gz    10,000 images     t10k-labels-idx1-ubyte.gz    10,000 labels

Each file, once gunzipped, is

    offset  type                    value                 description
    0000    32-bit integer          0x00000803 (2051)     magic number, images: unsigned bytes, 3 dimensions
                                    0x00000801 (2049)     magic number, labels: unsigned bytes, 1 dimension
    0004    32-bit integer          60000 / 10000         number of items
    0008    32-bit integer          28                    number of rows (images only)
    0012    32-bit integer          28                    number of columns (images only)
    then    unsigned byte           ...                   pixels, row-major (0 background); or labels 0..9

with every integer big-endian ("MSB first"). The magic number is two zero bytes, the type (0x08:
unsigned byte) and the number of dimensions.

    files = published()                # {name: gzipped bytes}, real counts and 28x28
    write(folder, files)               # the four files into a folder

Only the pixels differ from the real files: every image is its class's template (a bar whose row
gives the class), so the files are written in a fraction of a second and compress to about 0.6 MB.
"""

import gzip
import struct
from pathlib import Path

import numpy as np

SIDE = 28
COUNTS = {"train": 60000, "t10k": 10000}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def idx(array: np.ndarray, magic: int | None = None) -> bytes:
    """`array` (uint8) as an IDX file, not gzipped; `magic` None: the one its dimensions call for."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x00000800 + array.ndim if magic is None else magic
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def gz(data: bytes, level: int = 1) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


def labels(count: int) -> np.ndarray:
    """0, 1, ..., 9, 0, 1, ...: every class equally often, as in the real sets."""
    return (np.arange(count) % 10).astype(np.uint8)


def images(label_array: np.ndarray, side: int = SIDE) -> np.ndarray:
    templates = np.zeros((10, side, side), np.uint8)
    for c in range(10):
        templates[c, 2 * c + 2:2 * c + 6, 4:side - 4] = 255
    return templates[label_array]


def arrays() -> dict:
    """{name: the array each file holds}."""
    out = {}
    for split, count in COUNTS.items():
        y = labels(count)
        out[f"{split}-images-idx3-ubyte.gz"] = images(y)
        out[f"{split}-labels-idx1-ubyte.gz"] = y
    return out


def published(level: int = 1) -> dict:
    """{name: gzipped IDX bytes} of the four files."""
    return {name: gz(idx(a), level) for name, a in arrays().items()}


def write(folder, files: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder
