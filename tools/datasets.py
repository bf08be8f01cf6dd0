"""Image classification datasets as uint8 arrays in Caffe's layout (N, C, H, W; BGR for colour).

    ds = load_fashion_mnist()                        # or load_cifar10("path/to/cifar-10-python.tar.gz")
    ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, ds.classes
    idx = stratified_subset(ds.train_labels, per_class=100, seed=0)
    .venv/bin/python -m tools.datasets               # where Fashion-MNIST is read from (downloads it if needed)

Fashion-MNIST is four gzipped IDX files, read from the first of (fashion_mnist_source):
  1. FASHION_MNIST_DIR, a folder of the four files you already have (or the same files gunzipped): read
     where it is, never written to;
  2. the Debian package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), when it holds them;
  3. data/fashion-mnist/ in the clone (tools.paths.DATA), where a missing file is downloaded from Zalando's
     published location (FASHION_MNIST_URL for a mirror), md5-checked, and a file that does not read as
     Fashion-MNIST is moved aside (`<name>.mismatch`, never deleted) and downloaded again.
Every copy is checked by reading it: IDX magic numbers, 60,000/10,000 images of 28x28, labels 0-9.
CIFAR-10 comes from its official python archive, read from a path: q1_dropout_augment.data chooses the
dataset by name (its `load`), downloads the archive or takes the user's own (--archive); the archive is
checked field by field as it is read.
"""

import argparse
import gzip
import io
import os
import pickle
import sys
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from tools import paths
from tools.cli import exit_on
from tools.errors import ToolkitError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # the Debian package dataset-fashion-mnist
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # Zalando's; + the file name
# md5 of each .gz as published in the table "Get the Data" of https://github.com/zalandoresearch/fashion-mnist
# (README.md). Checked against Debian's source package, whose orig tarball holds the upstream files
# (dataset-fashion-mnist_0.0~git20200523.55506a9.orig.tar.xz, data/fashion/*.gz): all four equal. The binary
# package's .gz files have other md5s (Debian recompressed them; gzip header date 2020-06-05), but decompressed
# they are byte for byte the same IDX files (e.g. train-images-idx3-ubyte: md5 f4a8712d7a061bf5bd6d2ca38dc4d50a
# both ways). So downloads are checked by md5, and copies (FASHION_MNIST_DIR, Debian's) by reading them.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MNIST_FILES = tuple(FASHION_MNIST_MD5)
# The IDX format (Yann LeCun's MNIST page, http://yann.lecun.com/exdb/mnist/, which the Fashion-MNIST README
# follows): a big-endian 32-bit magic number, 0x00000803 for images (unsigned bytes, 3 dimensions) and
# 0x00000801 for labels (unsigned bytes, 1 dimension), then each dimension as a big-endian 32-bit count, then
# the bytes row-major. Fashion-MNIST: 60,000 training and 10,000 test images of 28x28, labels 0-9.
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 0x00000803, 0x00000801
FASHION_MNIST_COUNTS = {"train": 60000, "t10k": 10000}
FASHION_MNIST_SIDE = 28
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
DATASETS = ("cifar10", "fashion-mnist")


class DatasetError(ToolkitError, RuntimeError):
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


def read_idx(path, fix: str = "") -> np.ndarray:
    """An IDX file (the MNIST format; gzip or not) of unsigned bytes as an array; `fix` ends every error."""
    path = Path(path)
    end = f". Fix: {fix}" if fix else ""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{path} not found{end}") from None
    except (OSError, EOFError, zlib.error) as e:
        what = "gzip file (damaged or cut off?)" if opener is gzip.open else "file"
        raise DatasetError(f"{path} is not a readable {what}: {e}{end}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic number {data[:4].hex()}){end}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: IDX header cut off ({len(data)} bytes for {ndim} dimensions; truncated?){end}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims} but holds {body.size} bytes (truncated?){end}")
    return body.reshape(dims)


@dataclass(frozen=True)
class FashionMnistSource:
    """Where Fashion-MNIST is read from: `folder`, described by `what`; `fix` is what to do about a bad file
    there; `download`: missing or bad files are (re)downloaded into it (only data/fashion-mnist/)."""

    folder: Path
    what: str
    fix: str
    download: bool = False


def fashion_mnist_url(name: str) -> str:
    base = os.environ.get("FASHION_MNIST_URL") or FASHION_MNIST_URL
    return base.rstrip("/") + "/" + name


def _own_files_fix(folder_hint="a folder") -> str:
    return (f"set FASHION_MNIST_DIR to {folder_hint} holding the four files ({', '.join(FASHION_MNIST_FILES)}; "
            f"published at {FASHION_MNIST_URL}), or install the Debian package (apt-get install dataset-fashion-mnist)")


def fashion_mnist_source() -> FashionMnistSource:
    """The first of FASHION_MNIST_DIR, the Debian package, data/fashion-mnist/ (see the module's docstring)."""
    own = os.environ.get("FASHION_MNIST_DIR")
    if own:
        return FashionMnistSource(
            Path(own).expanduser(), f"FASHION_MNIST_DIR={own}",
            f"put Fashion-MNIST's four files there ({', '.join(FASHION_MNIST_FILES)}, as published at "
            f"{FASHION_MNIST_URL}), or unset FASHION_MNIST_DIR to use the Debian package or a download")
    if all((DEBIAN_FASHION_MNIST / name).exists() for name in FASHION_MNIST_FILES):
        return FashionMnistSource(
            DEBIAN_FASHION_MNIST, "the Debian package dataset-fashion-mnist",
            "reinstall it (apt-get install --reinstall dataset-fashion-mnist), or set FASHION_MNIST_DIR to a folder "
            "holding the four files")
    clone = paths.DATA / "fashion-mnist"
    try:
        shown = clone.relative_to(paths.REPO).as_posix()
    except ValueError:
        shown = str(clone)
    return FashionMnistSource(clone, f"{shown}/ (downloaded from {fashion_mnist_url('')})",
                              f"run .venv/bin/python -m tools.datasets: it moves the file aside and downloads it "
                              f"again; or {_own_files_fix()}", download=True)


def fashion_mnist_file(folder, name: str) -> Path:
    """`name` (a .gz) in `folder`, or the same file gunzipped when only that one is there."""
    path = Path(folder) / name
    plain = path.with_suffix("")
    return plain if not path.exists() and plain.exists() else path


def _download_fashion_mnist(source: FashionMnistSource, name: str) -> None:
    from tools.download import DownloadError, download

    url = fashion_mnist_url(name)
    print(f"[fashion-mnist] downloading {url} into {source.folder}/", file=sys.stderr)
    try:
        download(url, source.folder / name, md5=FASHION_MNIST_MD5[name], desc=name, url_env="FASHION_MNIST_URL",
                 own_file_hint="FASHION_MNIST_DIR=folder (a folder holding the four files)")
    except DownloadError as e:
        debian = "install the Debian package (apt-get install dataset-fashion-mnist)"
        more = debian if "FASHION_MNIST_DIR" in str(e) else _own_files_fix()
        raise DatasetError(f"Fashion-MNIST: {source.folder / name} is not here and could not be downloaded: {e}; "
                           f"or {more}") from None


def _check_fashion_mnist(path: Path, split: str, kind: str, array: np.ndarray, fix: str) -> np.ndarray:
    """`array` as read from `path` if it is Fashion-MNIST's `split` ("train"/"t10k") `kind` ("images"/"labels")."""
    count = FASHION_MNIST_COUNTS[split]
    which = "training" if split == "train" else "test"
    side = FASHION_MNIST_SIDE
    magic, shape = ((IDX_IMAGES_MAGIC, (count, side, side)) if kind == "images" else (IDX_LABELS_MAGIC, (count,)))
    end = f". Fix: {fix}"
    got = 0x0800 + array.ndim
    if got != magic:
        raise DatasetError(f"{path}: magic number 0x{got:08x} ({array.ndim} dimensions), expected 0x{magic:08x} for "
                           f"{kind}: not Fashion-MNIST's {which} {kind} file{end}")
    if array.shape[0] != count:
        raise DatasetError(f"{path}: holds {array.shape[0]} {kind}, expected {count} (Fashion-MNIST's {which} "
                           f"set){end}")
    if array.shape != shape:
        raise DatasetError(f"{path}: images of {'x'.join(map(str, array.shape[1:]))}, expected {side}x{side}{end}")
    if kind == "labels":
        bad = np.flatnonzero(array > 9)
        if bad.size:
            raise DatasetError(f"{path}: label {array[bad[0]]} at entry {bad[0]} ({bad.size} out of range), "
                               f"expected 0-9{end}")
    return array


def _read_fashion_mnist_file(source: FashionMnistSource, name: str) -> np.ndarray:
    split, kind = name.split("-")[:2]
    path = fashion_mnist_file(source.folder, name)
    if not path.exists():
        if not source.download:
            raise DatasetError(f"{path.parent / name} not found ({source.what}). Fix: {source.fix}")
        _download_fashion_mnist(source, name)
        path = source.folder / name
    try:
        return _check_fashion_mnist(path, split, kind, read_idx(path, source.fix), source.fix)
    except DatasetError as e:
        if not source.download or path.name != name:
            raise
        # In the download folder: download() moves the bad file aside (<name>.mismatch, kept) and fetches it again.
        print(f"[fashion-mnist] {str(e).split('. Fix:')[0]}", file=sys.stderr)
        _download_fashion_mnist(source, name)
        return _check_fashion_mnist(path, split, kind, read_idx(path, source.fix), source.fix)


def load_fashion_mnist(root=None, download: bool = True) -> Dataset:
    """Fashion-MNIST, checked as it is read: from `root` when given, else from fashion_mnist_source();
    `download` False never downloads (a missing file is an error)."""
    if root is not None:
        source = FashionMnistSource(Path(root), str(root), f"put Fashion-MNIST's four files in {root}, or "
                                    f"{_own_files_fix('another folder')}")
    else:
        source = fashion_mnist_source()
        if not download and source.download:
            source = FashionMnistSource(source.folder, source.what, source.fix)
    arrays = {name: _read_fashion_mnist_file(source, name) for name in FASHION_MNIST_FILES}

    def part(split):
        images = arrays[f"{split}-images-idx3-ubyte.gz"]
        labels = arrays[f"{split}-labels-idx1-ubyte.gz"].astype(np.int64)
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


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.datasets",
                                 description="Find Fashion-MNIST (FASHION_MNIST_DIR, the Debian package, or "
                                             "data/fashion-mnist/, downloading what is missing there), check it "
                                             "by reading it, and say where it is.")
    ap.add_argument("--no-download", action="store_true", help="only check what is here; never download")
    a = ap.parse_args(argv)
    source = fashion_mnist_source()
    with exit_on():
        ds = load_fashion_mnist(download=not a.no_download)
    print(f"Fashion-MNIST: {len(ds.train_labels)} training and {len(ds.test_labels)} test images from "
          f"{source.what}: {source.folder}")


if __name__ == "__main__":
    main()
