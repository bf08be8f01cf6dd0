"""Datasets as Caffe LMDBs of `Datum` records, and their mean image.

    write_arrays("data/x_lmdb", images_uint8_NCHW, labels, shuffle_seed=0)
    for image_chw, label in read_lmdb("data/x_lmdb"): ...
    compute_mean("data/x_lmdb", "data/x_mean.binaryproto")   # also writes x_mean.npy

Keys are zero-padded indices, so LMDB's byte order is the write order (what a `Data` layer reads).
Images are CHW uint8 in Caffe's channel order (BGR for colour, as `convert_imageset` stores them).
An LMDB is written beside its final path and renamed into place, so a crash leaves no half database.
"""

import io
import shutil
import subprocess
from pathlib import Path

import lmdb
import numpy as np

from tools import paths
from tools.weights import blob_array

KEY_FORMAT = "{:08d}"
INITIAL_MAP_SIZE = 1 << 26  # grows by doubling when full


def _caffe_pb2():
    from caffe.proto import caffe_pb2

    return caffe_pb2


def array_datum(image_chw: np.ndarray, label: int):
    """A raw Datum (caffe.io.array_to_datum without its float path)."""
    if image_chw.dtype != np.uint8 or image_chw.ndim != 3:
        raise ValueError(f"expected a CHW uint8 image, got {image_chw.dtype} of shape {image_chw.shape}")
    d = _caffe_pb2().Datum()
    d.channels, d.height, d.width = image_chw.shape
    d.data = np.ascontiguousarray(image_chw).tobytes()
    d.label = int(label)
    return d


def encoded_datum(encoded: bytes, label: int):
    """A Datum holding a JPEG/PNG file's bytes, decoded by Caffe's `Data` layer (OpenCV)."""
    d = _caffe_pb2().Datum()
    d.data, d.encoded, d.label = encoded, True, int(label)
    return d


def _write(path, datums, count: int) -> Path:
    """Write `count` datums into a fresh LMDB at `path` (atomically, growing the map as needed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(tmp), map_size=INITIAL_MAP_SIZE, subdir=True, lock=True)
    batch, index = [], 0

    def flush():
        while True:
            try:
                with env.begin(write=True) as txn:
                    for key, value in batch:
                        txn.put(key, value)
                return
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)

    for datum in datums:
        batch.append((KEY_FORMAT.format(index).encode(), datum.SerializeToString()))
        index += 1
        if len(batch) == 1000:
            flush()
            batch = []
    flush()
    env.close()
    if index != count:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{path}: wrote {index} records, expected {count}")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def _order(n: int, shuffle_seed) -> np.ndarray:
    return np.arange(n) if shuffle_seed is None else np.random.RandomState(shuffle_seed).permutation(n)


def write_arrays(path, images: np.ndarray, labels, shuffle_seed=None) -> Path:
    """uint8 images (N, C, H, W) and labels into an LMDB; `shuffle_seed` shuffles the record order."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, C, H, W), got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    order = _order(len(images), shuffle_seed)
    return _write(path, (array_datum(images[i], labels[i]) for i in order), len(order))


def write_encoded(path, files_or_bytes, labels, shuffle_seed=None) -> Path:
    """Encoded images (file paths or bytes) and labels into an LMDB of encoded Datums."""
    items, labels = list(files_or_bytes), list(labels)
    if len(items) != len(labels):
        raise ValueError(f"{len(items)} images but {len(labels)} labels")
    order = _order(len(items), shuffle_seed)

    def datums():
        for i in order:
            data = items[i] if isinstance(items[i], bytes) else Path(items[i]).read_bytes()
            yield encoded_datum(data, labels[i])

    return _write(path, datums(), len(order))


def write_features(path, features: np.ndarray, labels) -> Path:
    """Float feature vectors (N, D) as D x 1 x 1 float Datums, which a `Data` layer reads as (batch, D, 1, 1)."""
    features = np.asarray(features, np.float32)
    pb2 = _caffe_pb2()

    def datums():
        for vector, label in zip(features, labels, strict=True):
            d = pb2.Datum()
            d.channels, d.height, d.width = vector.size, 1, 1
            d.float_data.extend(vector.tolist())
            d.label = int(label)
            yield d

    return _write(path, datums(), len(features))


def decode_datum(datum) -> np.ndarray:
    """A Datum's image as CHW uint8 (BGR for colour), decoding encoded ones like Caffe does."""
    if datum.encoded:
        from PIL import Image

        img = np.asarray(Image.open(io.BytesIO(datum.data)))
        if img.ndim == 2:
            return img[None].copy()
        return img[:, :, :3][:, :, ::-1].transpose(2, 0, 1).copy()  # RGB -> BGR, HWC -> CHW
    if datum.data:
        return np.frombuffer(datum.data, np.uint8).reshape(datum.channels, datum.height, datum.width).copy()
    return np.array(datum.float_data, np.float32).reshape(datum.channels, datum.height, datum.width)


def read_lmdb(path):
    """Yield (image CHW, label) in key order."""
    path = Path(path)
    if not (path / "data.mdb").exists():
        raise FileNotFoundError(f"no LMDB at {path} (expected {path}/data.mdb)")
    pb2 = _caffe_pb2()
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            for _, value in txn.cursor():
                d = pb2.Datum()
                d.ParseFromString(value)
                yield decode_datum(d), d.label
    finally:
        env.close()


def count(path) -> int:
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def read_binaryproto(path) -> np.ndarray:
    """A BlobProto (e.g. a mean file) as an array, without its leading num axis when it is 1."""
    pb2 = _caffe_pb2()
    blob = pb2.BlobProto()
    blob.ParseFromString(Path(path).read_bytes())
    arr = blob_array(blob)
    return arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr


def write_binaryproto(arr: np.ndarray, path) -> Path:
    """A (C, H, W) array as a 1xCxHxW BlobProto, the layout mean files use."""
    from tools.fileio import write_bytes

    pb2 = _caffe_pb2()
    arr = np.asarray(arr, np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    blob = pb2.BlobProto()
    blob.num, blob.channels, blob.height, blob.width = arr.shape
    blob.data.extend(arr.ravel().tolist())
    return write_bytes(path, blob.SerializeToString())


def compute_mean(lmdb_path, binaryproto_path) -> np.ndarray:
    """The mean image with Caffe's own `compute_image_mean`; also saved as .npy beside it for pycaffe."""
    binaryproto_path = Path(binaryproto_path)
    binaryproto_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = binaryproto_path.with_name(f".{binaryproto_path.name}.tmp")
    cmd = [str(paths.caffe_tool("compute_image_mean")), "-backend=lmdb", str(lmdb_path), str(tmp)]
    proc = subprocess.run(cmd, env=paths.caffe_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        fatal = next((ln for ln in proc.stderr.splitlines() if ln.startswith("F") or "Check failed" in ln), "")
        raise RuntimeError(f"compute_image_mean failed on {lmdb_path}: {fatal or proc.stderr[-500:]}")
    tmp.replace(binaryproto_path)
    mean = read_binaryproto(binaryproto_path)
    from tools.fileio import atomic_path

    with atomic_path(binaryproto_path.with_suffix(".npy"), suffix=".npy") as t:
        np.save(t, mean)
    return mean
