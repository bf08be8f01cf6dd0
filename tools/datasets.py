"""Image classification datasets as uint8 arrays in Caffe's layout (N, C, H, W; BGR for colour).

    ds = load("fashion-mnist")           # or "cifar10" (from its downloaded archive)
    ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, ds.classes
    idx = stratified_subset(ds.train_labels, per_class=100, seed=0)

Fashion-MNIST ships in the Debian package `dataset-fashion-mnist` (real data that works offline);
CIFAR-10 comes from its official archive (see q1_dropout_augment/data.py for the download).
"""

import gzip
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
DATASETS = ("cifar10", "fashion-mnist")


class DatasetError(RuntimeError):
    """A dataset is missing or malformed; the message names the file and the fix."""


@dataclass
class Dataset:
    name: str
    train_images: np.ndarray  # (N, C, H, W) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list

    @property
    def shape(self):
        return self.train_images.shape[1:]


def read_idx(path) -> np.ndarray:
    """An IDX file (the MNIST format; gzip or not) as an array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{path} not found: install it with `apt-get install dataset-fashion-mnist` "
                           "(make setup does)") from None
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path} is not a readable (gzip) file: {e}; reinstall dataset-fashion-mnist") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic {data[:4].hex()})")
    ndim = data[3]
    dims = np.frombuffer(data, ">u4", count=ndim, offset=4).astype(int)
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {tuple(dims)} but holds {body.size} bytes (truncated?)")
    return body.reshape(dims)


def load_fashion_mnist(root=FASHION_MNIST_DIR) -> Dataset:
    root = Path(root)

    def part(kind):
        images = read_idx(root / f"{kind}-images-idx3-ubyte.gz")
        labels = read_idx(root / f"{kind}-labels-idx1-ubyte.gz").astype(np.int64)
        return images[:, None], labels  # grey: one channel

    tr, trl = part("train")
    te, tel = part("t10k")
    return Dataset("fashion-mnist", tr, trl, te, tel, list(FASHION_MNIST_CLASSES))


def load_cifar10(archive) -> Dataset:
    """CIFAR-10 from `cifar-10-python.tar.gz`; RGB planes reordered to Caffe's BGR."""
    archive = Path(archive)
    if not archive.exists():
        raise DatasetError(f"{archive} not found: `make q1 DATASET=cifar10` downloads it")
    batches = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if name.startswith(("data_batch_", "test_batch", "batches.meta")):
                    batches[name] = pickle.load(tar.extractfile(member), encoding="bytes")
    except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise DatasetError(f"{archive} is damaged ({e}): delete it and download again") from None
    missing = [n for n in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"] if n not in batches]
    if missing:
        raise DatasetError(f"{archive} lacks {', '.join(missing)}: delete it and download again")

    def images(batch):
        rgb = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        return np.ascontiguousarray(rgb[:, ::-1])  # RGB -> BGR, what convert_imageset would store

    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    classes = list(CIFAR10_CLASSES)
    if "batches.meta" in batches:
        classes = [c.decode() for c in batches["batches.meta"][b"label_names"]]
    return Dataset(
        "cifar10",
        np.concatenate([images(b) for b in train]),
        np.concatenate([np.asarray(b[b"labels"], np.int64) for b in train]),
        images(batches["test_batch"]),
        np.asarray(batches["test_batch"][b"labels"], np.int64),
        classes,
    )


def stratified_subset(labels, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of `per_class` examples of every class, chosen with `seed`, in a seeded shuffled order."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if per_class > len(members):
            raise DatasetError(f"asked for {per_class} images of class {c}, but the data has only {len(members)}; "
                               f"use a subset of at most {len(members)} per class")
        picked.append(rng.choice(members, per_class, replace=False))
    return rng.permutation(np.concatenate(picked))
