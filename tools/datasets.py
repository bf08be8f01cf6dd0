"""Image classification datasets as uint8 arrays in Caffe's layout (N, C, H, W; BGR for colour).

    ds = load_fashion_mnist()                        # or load_cifar10("path/to/cifar-10-python.tar.gz")
    ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, ds.classes
    idx = stratified_subset(ds.train_labels, per_class=100, seed=0)

Fashion-MNIST ships in the Debian package `dataset-fashion-mnist` (real data that works offline);
CIFAR-10 comes from its official python archive, read from a path: q1_dropout_augment.data chooses the
dataset by name (its `load`), downloads the archive or takes the user's own (--archive); the archive is
checked field by field as it is read.
"""

import gzip
import io
import pickle
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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


CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR10_META = "batches.meta"
CIFAR10_DAMAGED = ("the archive is damaged or not CIFAR-10's python version: download it again "
                   "(https://www.cs.toronto.edu/~kriz/cifar.html) or pass another with --archive PATH "
                   "(make q1 CIFAR10_ARCHIVE=PATH)")
# The only globals a CIFAR-10 batch refers to (numpy arrays pickled by numpy 1.x; numpy 2 renamed
# numpy.core to numpy._core). Anything else is refused: unpickling may call any global it names.
_CIFAR10_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy", "ndarray"), ("numpy", "dtype")}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _CIFAR10_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which no CIFAR-10 batch does "
                                         "(not loaded: unpickling it could run code)")
        with warnings.catch_warnings():
            # numpy 2 keeps numpy.core.multiarray for old pickles; some 2.x releases warn about it
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def load_cifar10(archive) -> Dataset:
    """CIFAR-10 from `cifar-10-python.tar.gz`, checked as it is read; RGB planes reordered to Caffe's BGR.

    Only reads `archive`. Every error names the archive, the member, the field and the fix."""
    archive = Path(archive)
    members = _read_cifar10_members(archive)
    classes = _cifar10_classes(archive, members[CIFAR10_META])
    train = [_cifar10_batch(archive, n, members[n]) for n in CIFAR10_BATCHES[:-1]]
    test_images, test_labels = _cifar10_batch(archive, "test_batch", members["test_batch"])
    return Dataset("cifar10", np.concatenate([im for im, _ in train]), np.concatenate([lb for _, lb in train]),
                   test_images, test_labels, classes)


def _read_cifar10_members(archive: Path) -> dict:
    """The unpickled batches and batches.meta, by name; the whole gzip stream is read, so a cut-off
    or corrupt archive fails here rather than training on part of it."""
    if not archive.is_file():
        raise DatasetError(f"{archive} not found: pass the path of a cifar-10-python.tar.gz with --archive PATH "
                           "(make q1 CIFAR10_ARCHIVE=PATH), or leave it out to download it")
    wanted = {*CIFAR10_BATCHES, CIFAR10_META}
    found, current = {}, None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = PurePosixPath(member.name).name
                if member.isfile() and name in wanted and name not in found:
                    current = member.name
                    raw = tar.extractfile(member).read()
                    found[name] = _unpickle_member(archive, member.name, raw)
                    current = None
            while tar.fileobj.read(1 << 20):  # tarfile stops at the end marker; the gzip CRC is after it
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        where = f" (in {current})" if current else ""
        raise DatasetError(f"{archive}: not a whole gzip tar{where}: {e}; {CIFAR10_DAMAGED}") from None
    missing = [f"{CIFAR10_FOLDER}/{n}" for n in (*CIFAR10_BATCHES, CIFAR10_META) if n not in found]
    if missing:
        raise DatasetError(f"{archive}: lacks {', '.join(missing)}; {CIFAR10_DAMAGED}")
    return found


def _unpickle_member(archive: Path, member: str, raw: bytes):
    try:
        # encoding="bytes": the batches were pickled by Python 2, whose str keys and text load as bytes
        return _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # a damaged pickle can fail in many ways (EOF, bad opcode, bad array state)
        raise DatasetError(f"{archive}: {member}: not a readable pickle ({e}); {CIFAR10_DAMAGED}") from None


def _fields(archive: Path, member: str, obj) -> dict:
    """A pickled dict with its keys as str (they load as bytes from Python 2's pickles)."""
    if not isinstance(obj, dict):
        raise DatasetError(f"{archive}: {CIFAR10_FOLDER}/{member}: holds a {type(obj).__name__}, not a dict; "
                           f"{CIFAR10_DAMAGED}")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar10_batch(archive: Path, member: str, obj):
    """(images N x 3 x 32 x 32 BGR, labels N) of one batch, after checking its 'data' and 'labels'."""
    fields = _fields(archive, member, obj)
    where = f"{archive}: {CIFAR10_FOLDER}/{member}"
    for key in ("data", "labels"):
        if key not in fields:
            raise DatasetError(f"{where}: no '{key}' field; {CIFAR10_DAMAGED}")
    data = fields["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[0] > 0 and data.shape[1] == 3 * 32 * 32):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{where}: 'data' is {got}, expected uint8 (N, 3072): N images of 3 x 32 x 32; "
                           f"{CIFAR10_DAMAGED}")
    labels = np.asarray(fields["labels"])
    if labels.ndim == 1 and len(labels) != len(data):
        raise DatasetError(f"{where}: 'labels' has {len(labels)} entries but 'data' has {len(data)} rows; "
                           f"{CIFAR10_DAMAGED}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetError(f"{where}: 'labels' is not a list of integers; {CIFAR10_DAMAGED}")
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        raise DatasetError(f"{where}: 'labels' holds {labels[bad[0]]} (entry {bad[0]}; {bad.size} out of range), "
                           f"but CIFAR-10's labels are 0..9; {CIFAR10_DAMAGED}")
    rgb = data.reshape(-1, 3, 32, 32)  # each row: the red, green and blue 32x32 planes, row-major
    return np.ascontiguousarray(rgb[:, ::-1]), labels.astype(np.int64)  # RGB -> BGR, as convert_imageset stores


def _cifar10_classes(archive: Path, obj) -> list:
    fields = _fields(archive, CIFAR10_META, obj)
    names = fields.get("label_names")
    where = f"{archive}: {CIFAR10_FOLDER}/{CIFAR10_META}"
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DatasetError(f"{where}: 'label_names' is missing or not a list of names; {CIFAR10_DAMAGED}")
    if len(names) != 10:
        raise DatasetError(f"{where}: 'label_names' has {len(names)} entries, expected 10; {CIFAR10_DAMAGED}")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


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
