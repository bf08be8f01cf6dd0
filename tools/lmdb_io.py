"""Datasets as Caffe LMDBs of `Datum` records, and their mean image.

    write_arrays("data/x_lmdb", images_uint8_NCHW, labels, shuffle_seed=0)
    for image_chw, label in read_lmdb("data/x_lmdb"): ...
    compute_mean("data/x_lmdb", "data/x_mean.binaryproto")   # also writes x_mean.npy

Keys are zero-padded indices, so LMDB's byte order is the write order (what a `Data` layer reads).
Images are CHW uint8 in Caffe's channel order (BGR for colour, as `convert_imageset` stores them).
An LMDB is written beside its final path under a name unique to the writing process and renamed into
place, so a crash leaves no half database and two writers never delete each other's data.

Each LMDB written here carries `manifest.json` (entries, label counts, the size and SHA-256 of
data.mdb, and what the caller says it was made from); `check()` verifies it, and catches a truncated
data.mdb from LMDB's own page count, before Caffe maps the file and dies of SIGBUS.
"""

import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import lmdb
import numpy as np

from tools import paths
from tools.cli import disk_is_full
from tools.errors import ToolkitError
from tools.fileio import _UMASK, DamagedFile, atomic_path, read_json, shape_problem, write_text
from tools.weights import blob_array

MANIFEST = "manifest.json"


class LmdbError(ToolkitError, ValueError):
    """An LMDB is missing, truncated, or not what its manifest says; the message names it and the fix."""

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _remove_stale(path: Path):
    """Temporary folders of `path` left by writers that died (their PID is in the name); a live writer's
    are left alone."""
    for old in path.parent.glob(f".{path.name}.*.tmp"):
        pid = old.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _write(path, datums, count: int, *, num_classes=None, source=None) -> Path:
    """Write `count` datums into a fresh LMDB at `path` (atomically, growing the map as needed), with its
    manifest. `num_classes` refuses labels outside [0, num_classes) before anything is written over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders; give what a plain mkdir would
        env = lmdb.open(str(tmp), map_size=INITIAL_MAP_SIZE, subdir=True, lock=True)
        batch, index, labels = [], 0, {}

        def flush():
            while True:
                try:
                    with env.begin(write=True) as txn:
                        for key, value in batch:
                            txn.put(key, value)
                    return
                except lmdb.MapFullError:
                    env.set_mapsize(env.info()["map_size"] * 2)

        try:
            for datum in datums:
                label = int(datum.label)
                if num_classes is not None and not 0 <= label < num_classes:
                    raise LmdbError(f"{path}: record {index} has label {label}, outside 0..{num_classes - 1} "
                                    f"({num_classes} classes). Fix: labels are class indices counted from 0")
                labels[label] = labels.get(label, 0) + 1
                batch.append((KEY_FORMAT.format(index).encode(), datum.SerializeToString()))
                index += 1
                if len(batch) == 1000:
                    flush()
                    batch = []
            flush()
        except lmdb.Error as e:  # e.g. the disk is full (LMDB says `mdb_txn_commit: Input/output error`): say where
            if disk_is_full(tmp):
                raise OSError(errno.ENOSPC, f"No space left on device (LMDB: {e})", str(path)) from None
            raise OSError(None, f"LMDB write failed: {e}", str(path)) from None
        finally:
            env.close()
        if index != count:
            raise ValueError(f"{path}: wrote {index} records, expected {count}")
        data = tmp / "data.mdb"
        manifest = {"entries": index, "labels": {str(k): v for k, v in sorted(labels.items())},
                    "data_size": data.stat().st_size, "sha256": _sha256(data), "source": source or {}}
        write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        if path.exists():
            # move the old database out of the way under a name of our own, then drop it: the new one is
            # complete and in place before anything is removed
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
            os.rename(path, old / "db")
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno and str(e.filename or "").startswith(str(tmp)):
            # the manifest or data.mdb of the hidden temporary folder: name the LMDB being written
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    return path


def _order(n: int, shuffle_seed) -> np.ndarray:
    return np.arange(n) if shuffle_seed is None else np.random.RandomState(shuffle_seed).permutation(n)


def write_arrays(path, images: np.ndarray, labels, shuffle_seed=None, *, num_classes=None, source=None) -> Path:
    """uint8 images (N, C, H, W) and labels into an LMDB; `shuffle_seed` shuffles the record order.
    `num_classes` checks the labels; `source` (a dict) goes into the manifest."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, C, H, W), got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    order = _order(len(images), shuffle_seed)
    return _write(path, (array_datum(images[i], labels[i]) for i in order), len(order), num_classes=num_classes,
                  source=source)


def write_encoded(path, files_or_bytes, labels, shuffle_seed=None, *, num_classes=None, source=None) -> Path:
    """Encoded images (file paths or bytes) and labels into an LMDB of encoded Datums."""
    items, labels = list(files_or_bytes), list(labels)
    if len(items) != len(labels):
        raise ValueError(f"{len(items)} images but {len(labels)} labels")
    order = _order(len(items), shuffle_seed)

    def datums():
        for i in order:
            data = items[i] if isinstance(items[i], bytes) else Path(items[i]).read_bytes()
            yield encoded_datum(data, labels[i])

    return _write(path, datums(), len(order), num_classes=num_classes, source=source)


def write_features(path, features: np.ndarray, labels, *, num_classes=None, source=None) -> Path:
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

    return _write(path, datums(), len(features), num_classes=num_classes, source=source)


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
    check_pages(path)
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


def check_pages(path, fix="write it again") -> int:
    """The entry count of the LMDB at `path`, after checking that data.mdb holds every page LMDB's own
    header says it uses: a truncated file (a full disk, a copy cut short) would otherwise be mapped by
    Caffe and kill it with SIGBUS when it reads past the end."""
    path = Path(path)
    data = path / "data.mdb"
    if not data.is_file():
        raise LmdbError(f"no LMDB at {path} (expected {data}). Fix: {fix}")
    try:
        env = lmdb.open(str(path), readonly=True, lock=False)
    except lmdb.Error as e:
        raise LmdbError(f"{path} is not a readable LMDB ({e}). Fix: {fix}") from None
    try:
        info, stat = env.info(), env.stat()
    finally:
        env.close()
    needed, size = (info["last_pgno"] + 1) * stat["psize"], data.stat().st_size
    if size < needed:
        raise LmdbError(f"{data} is truncated: {size:,} bytes, but its pages need {needed:,}. Fix: {fix}")
    return stat["entries"]


def read_manifest(path, fix="write it again") -> dict | None:
    """The LMDB's manifest; None if it has none. A damaged one is refused (LmdbError naming it and `fix`):
    without it the LMDB cannot be checked, and the callers that can write the LMDB again do so on that error
    (the LMDB and its manifest are replaced together)."""
    f = Path(path) / MANIFEST
    try:
        return read_json(f, fix=fix, expect=_manifest_problem)
    except DamagedFile as e:
        raise LmdbError(str(e)) from None
    except OSError as e:
        raise LmdbError(f"{f} is unreadable ({e.strerror or e}). Fix: {fix}") from None


def _manifest_problem(manifest: dict) -> str | None:
    """What is wrong with a manifest's fields (None if nothing): the checks below compare every one of them."""
    problem = shape_problem(manifest, {"entries": int, "labels": dict, "data_size": int, "sha256": str,
                                       "source": dict})
    if problem:
        return problem
    for label, n in manifest["labels"].items():
        if not (label.lstrip("-").isdigit() and isinstance(n, int) and not isinstance(n, bool)):
            return f"'labels' maps {json.dumps(label)} to {json.dumps(n)[:20]}, not a class index to a count"
    return None


def check(path, *, entries=None, source=None, num_classes=None, fingerprint=True, fix="write it again") -> dict:
    """Verify an LMDB written by this module against its manifest before anything trusts it: every page
    present, the entry count (and `entries`, when given), data.mdb's size and (with `fingerprint`) its
    SHA-256, the `source` it was made from, and labels within [0, num_classes). Returns the manifest;
    raises LmdbError naming what does not match."""
    path = Path(path)
    found = check_pages(path, fix)
    manifest = read_manifest(path, fix)
    if manifest is None:
        raise LmdbError(f"{path} has no {MANIFEST}: it was not written by this toolkit's current version, "
                        f"so its contents cannot be checked. Fix: {fix}")
    data = path / "data.mdb"
    problems = []
    if found != manifest.get("entries"):
        problems.append(f"{found} entries, its manifest says {manifest.get('entries')}")
    if entries is not None and found != entries:
        problems.append(f"{found} entries where {entries} are expected")
    if data.stat().st_size != manifest.get("data_size"):
        problems.append(f"data.mdb is {data.stat().st_size:,} bytes, its manifest says {manifest.get('data_size'):,}")
    elif fingerprint and _sha256(data) != manifest.get("sha256"):
        problems.append("data.mdb's SHA-256 differs from its manifest's (changed after it was written)")
    if source is not None and manifest.get("source") != json.loads(json.dumps(source)):
        problems.append("it was made from other inputs than these")
    if problems:
        raise LmdbError(f"{path}: {'; '.join(problems)}. Fix: {fix}")
    if num_classes is not None:
        bad = [int(k) for k in manifest.get("labels", {}) if not 0 <= int(k) < num_classes]
        if bad:
            raise LmdbError(f"{path} holds label {bad[0]}, outside 0..{num_classes - 1} ({num_classes} classes). "
                            f"Fix: labels are class indices counted from 0; {fix}")
    return manifest


def record_labels(path, fix="write it again") -> dict[int, int]:
    """{label: records} read from the records themselves (each Datum's `label`), never from the manifest: a label
    changed in data.mdb after it was written (its size unchanged) is seen. ~0.12 s for 50,000 CIFAR-10-sized
    records. LmdbError names the file and record when one is not a Datum."""
    from google.protobuf.message import DecodeError

    path = Path(path)
    check_pages(path, fix)
    d = _caffe_pb2().Datum()
    counts: dict[int, int] = {}
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin(buffers=True) as txn:
            for key, value in txn.cursor():
                try:
                    d.ParseFromString(value)
                except DecodeError as e:
                    raise LmdbError(f"{path / 'data.mdb'}: record {bytes(key).decode(errors='replace')} is not a "
                                    f"Caffe Datum ({e}): the file was changed or damaged. Fix: {fix}") from None
                counts[d.label] = counts.get(d.label, 0) + 1
    except lmdb.Error as e:  # a damaged page
        raise LmdbError(f"{path / 'data.mdb'} cannot be read ({e}): it is damaged. Fix: {fix}") from None
    finally:
        env.close()
    return counts


def check_labels(path, num_classes: int, *, fix="write it again", where="") -> dict[int, int]:
    """{label: records} from the records (record_labels), after checking every label is within
    [0, num_classes); LmdbError naming data.mdb, the label, how many records hold it, and the fix."""
    path = Path(path)
    counts = record_labels(path, fix)
    bad = sorted(label for label in counts if not 0 <= label < num_classes)
    if bad:
        raise LmdbError(f"{path / 'data.mdb'} holds {counts[bad[0]]} record(s) with label {bad[0]}, outside "
                        f"0..{num_classes - 1} ({num_classes} classes){' ' + where if where else ''}. Fix: {fix}")
    return counts


def label_counts(path) -> dict[int, int]:
    """{label: records} of an LMDB of Datums, read from its records (record_labels): a manifest records what was
    written, not what data.mdb holds now."""
    return record_labels(path)


def read_binaryproto(path) -> np.ndarray:
    """A BlobProto (e.g. a mean file) as an array, without its leading num axis when it is 1. Anything else
    raises ValueError naming the file."""
    from google.protobuf.message import DecodeError

    path = Path(path)
    pb2 = _caffe_pb2()
    blob = pb2.BlobProto()
    fix = ("Fix: give a mean image as Caffe writes it (compute_image_mean; `python -m tools.get_ilsvrc_aux` fetches "
           "ImageNet's), or a .npy array")
    try:
        blob.ParseFromString(path.read_bytes())
    except DecodeError as e:
        raise ValueError(f"{path} is not a BlobProto (.binaryproto) file: {e}. {fix}") from None
    try:
        arr = blob_array(blob)
    except ValueError:
        arr = None
    if arr is None or arr.size == 0:
        raise ValueError(f"{path} is not a BlobProto (.binaryproto) file: it holds no array whose size matches its "
                         f"shape. {fix}")
    return arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr


def read_mean(path) -> np.ndarray:
    """A mean image from a .binaryproto (BlobProto) or .npy file, (C, H, W) or (C,); ValueError names the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"mean file {path} is a folder, not a file. Fix: give the mean file inside it (a "
                         ".binaryproto that compute_image_mean writes, or a .npy array)")
    if not path.is_file():
        raise FileNotFoundError(f"mean file {path} not found")
    if path.suffix != ".npy":
        mean = read_binaryproto(path)
    else:
        try:
            mean = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path} is not a .npy array: {e}. Fix: save the mean with numpy.save, or give the "
                             ".binaryproto compute_image_mean writes") from None
    if mean.ndim not in (1, 3) or mean.size == 0 or not np.issubdtype(mean.dtype, np.number):
        raise ValueError(f"{path} holds a {mean.dtype} array of shape {mean.shape}: a mean is (channels, height, "
                         "width) or (channels,). Fix: give the mean image of the training data")
    return mean


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
    check_pages(lmdb_path)  # compute_image_mean would die of SIGBUS on a truncated file
    with atomic_path(binaryproto_path, suffix=".binaryproto") as tmp:
        cmd = [str(paths.caffe_tool("compute_image_mean")), "-backend=lmdb", str(lmdb_path), str(tmp)]
        proc = subprocess.run(cmd, env=paths.caffe_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            fatal = next((ln for ln in proc.stderr.splitlines() if ln.startswith("F") or "Check failed" in ln), "")
            raise RuntimeError(f"compute_image_mean failed on {lmdb_path}: {fatal or proc.stderr[-500:]}")
    mean = read_binaryproto(binaryproto_path)
    with atomic_path(binaryproto_path.with_suffix(".npy"), suffix=".npy") as t:
        np.save(t, mean)
    return mean
