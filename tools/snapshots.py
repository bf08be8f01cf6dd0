"""A run's snapshots: finding them, checking them before Caffe is given one, and moving them aside.

    found = usable_snapshot(prefix, shapes=net_shapes)   # (solverstate, N) of the newest good one, or None

A snapshot is a `<prefix>_iter_N.solverstate` and the `.caffemodel` it names. When Caffe has written both,
the runner records their SHA-256 in `<prefix>_iter_N.sha256` (`sha256sum -c` reads it). Before "already
trained" or a resume, both must match that record, parse, hold as many blobs as each other and as the net
has learnable blobs, of the same shapes, and hold finite weights. A damaged one (a full disk, a kill during
the write, a file changed since) is moved aside to `<name>.broken` and the next older one is used; one
written by another net is refused. Starting afresh moves a run's snapshots and log
into `<prefix>.replaced-<time>/`, which is removed only once the new run has completed; files the toolkit
moved aside (`.broken`) are never part of it, and are kept.
"""

import hashlib
import os
import re
import time
from pathlib import Path

import numpy as np

from tools import paths
from tools.errors import ToolkitError
from tools.fileio import move_aside, write_text
from tools.solver import read_solver

SNAPSHOT_FILE = re.compile(r"_iter_(\d+)\.solverstate(\.h5)?$")


class SnapshotDamaged(ToolkitError, ValueError):
    """A snapshot that does not parse or contradicts itself (truncated, half-written)."""


class SnapshotMismatch(ToolkitError):
    """A snapshot that is whole but was written by another net: resuming it would fail or mix two nets."""


def snapshots(prefix: Path) -> list[tuple[int, Path]]:
    """(N, path) of every `<prefix>_iter_N.solverstate[.h5]`, newest first."""
    found = []
    for f in prefix.parent.glob(prefix.name + "_iter_*.solverstate*"):
        m = SNAPSHOT_FILE.search(f.name)
        if m and f.name == f"{prefix.name}_iter_{m.group(1)}.solverstate{m.group(2) or ''}":
            found.append((int(m.group(1)), f))
    return sorted(found, reverse=True)


def latest_snapshot(solver_path, cwd=paths.REPO) -> tuple[Path, int] | None:
    """The newest `<snapshot_prefix>_iter_N.solverstate` of a solver, with N (not checked)."""
    solver = read_solver(Path(cwd) / solver_path)
    if not solver.snapshot_prefix:
        return None
    found = snapshots(Path(cwd) / solver.snapshot_prefix)
    return (found[0][1], found[0][0]) if found else None


def caffemodel_of(state: Path) -> Path:
    return state.with_name(state.name.replace(".solverstate", ".caffemodel"))


def checksums_of(state: Path) -> Path:
    return state.with_name(re.sub(r"\.solverstate(\.h5)?$", ".sha256", state.name))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def record_checksums(state) -> Path:
    """Write `<prefix>_iter_N.sha256` for a snapshot Caffe has finished writing (sha256sum's format)."""
    state = Path(state)
    files = [caffemodel_of(state), state]
    return write_text(checksums_of(state), "".join(f"{_sha256(f)}  {f.name}\n" for f in files))


def verify_checksums(state: Path, say=print) -> bool:
    """Whether the snapshot's files still hold what was recorded when they were written; False when nothing
    was recorded (a snapshot of an earlier version, or one written after the runner died). SnapshotDamaged
    when a file differs; a record that is itself unreadable is moved aside (then False)."""
    record = checksums_of(state)
    if not record.exists():
        return False
    try:
        wanted = dict(reversed(line.split("  ", 1)) for line in record.read_text().splitlines())
        assert wanted and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in wanted.values())
    except (OSError, ValueError, AssertionError, UnicodeDecodeError):
        say(f"[snapshots] {record} is not a checksum list; moved aside to {move_aside(record, 'broken').name}")
        return False
    for f in (caffemodel_of(state), state):
        if f.name not in wanted:
            continue
        if not f.exists():
            raise SnapshotDamaged(f"{f} is missing (listed in {record.name})")
        if _sha256(f) != wanted[f.name]:
            raise SnapshotDamaged(f"{f} changed on disk after Caffe wrote it: its SHA-256 differs from the one "
                                  f"recorded then ({record.name})")
    return True


class ChecksumRecorder:
    """Follows Caffe's output line by line: once a line comes after `Snapshotting solver state to ... file X`
    that is not a fatal one, Caffe has finished writing snapshot X, and its checksums are recorded."""

    WRITING = re.compile(r"Snapshotting solver state to (?:binary proto|HDF5) file (\S+)")

    def __init__(self, cwd=paths.REPO):
        self.cwd, self.pending = Path(cwd), None

    def __call__(self, line: str, fatal: bool):
        if self.pending is not None and not fatal and self.pending.exists():
            record_checksums(self.pending)
        self.pending = None
        m = self.WRITING.search(line)
        if m and not fatal:
            self.pending = self.cwd / m.group(1)


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = raw[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7


def _weights(blob) -> list[np.ndarray]:
    """A BlobProto's weights as arrays, read from its wire format (protobuf's encoding docs): protobuf hands
    a repeated float out one Python float at a time (seconds for AlexNet), while its packed encoding is the
    array itself. caffe.proto declares `data` (5) and `double_data` (8) packed."""
    raw = blob.SerializeToString()
    arrays, i = [], 0
    while i < len(raw):
        key, i = _varint(raw, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(raw, i)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            n, i = _varint(raw, i)
            if field in (5, 8):
                dtype = np.dtype("<f4" if field == 5 else "<f8")
                arrays.append(np.frombuffer(raw, dtype, count=n // dtype.itemsize, offset=i))
            i += n
        else:
            raise ValueError(f"wire type {wire} in a BlobProto")
    return arrays


def _finite(blob) -> bool:
    return all(np.isfinite(a).all() for a in _weights(blob))


def _blob_count(blob) -> int:
    return len(blob.data) or len(blob.double_data)


def check_snapshot(state, *, cwd=paths.REPO, net_shapes=None) -> Path:
    """Check a `.solverstate` and the `.caffemodel` it names before Caffe is given them; return the latter.

    SnapshotDamaged: it does not parse, its iteration is not the one in its name, its weights file is
    missing or does not parse, a blob holds fewer numbers than its shape, or the history (one blob per
    learnable blob for SGD, two for Adam/AdaDelta) does not match the weights. SnapshotMismatch: whole,
    but the net (`net_shapes`, {layer: [shapes]}) has other learnable blobs.
    """
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError

    from tools import weights as caffe_weights

    state = Path(state)
    m = SNAPSHOT_FILE.search(state.name)
    if state.name.endswith(".h5"):  # HDF5 snapshots: only what can be checked without h5py
        model = caffemodel_of(state)
        if not model.is_file() or state.stat().st_size == 0:
            raise SnapshotDamaged(f"{state}: empty, or its weights {model.name} are missing")
        return model
    st = caffe_pb2.SolverState()
    try:
        st.ParseFromString(state.read_bytes())
    except DecodeError as e:
        raise SnapshotDamaged(f"{state} does not parse ({e}): it was cut short while being written") from None
    if m and st.iter != int(m.group(1)):
        raise SnapshotDamaged(f"{state} holds iteration {st.iter}, its name says {m.group(1)}")
    if not st.learned_net:
        raise SnapshotDamaged(f"{state} names no .caffemodel (learned_net): it was cut short while being written")
    model = Path(st.learned_net)
    model = model if model.is_absolute() else Path(cwd) / model
    try:
        net = caffe_weights.read_net(model)
    except FileNotFoundError:
        raise SnapshotDamaged(f"{state} names {st.learned_net}, which does not exist (cwd {cwd})") from None
    except ValueError as e:
        raise SnapshotDamaged(f"{state}: its weights {e}") from None
    blobs = [(name, b) for name, layer_blobs in caffe_weights._layers(net) for b in layer_blobs]
    for name, b in blobs:
        want = caffe_weights.stored_shape(b)
        if _blob_count(b) != _prod(want.dims):
            raise SnapshotDamaged(f"{model}: layer '{name}' holds {_blob_count(b)} numbers for shape {want}: it was "
                                  "cut short while being written")
        if not _finite(b):
            raise SnapshotDamaged(f"{model}: layer '{name}' holds NaN or infinite weights (the training diverged "
                                  "before this snapshot, or the file was damaged)")
    history = [tuple(h.shape.dim) for h in st.history]
    for h in st.history:
        if _blob_count(h) != _prod(h.shape.dim):
            raise SnapshotDamaged(f"{state}: a history blob holds {_blob_count(h)} numbers for shape "
                                  f"{'x'.join(map(str, h.shape.dim))}: it was cut short while being written")
    shapes = [caffe_weights.stored_shape(b) for _, b in blobs]
    if not blobs or len(history) not in (len(shapes), 2 * len(shapes)) or not all(
            s.fits(h) for s, h in zip(shapes * 2, history, strict=False)):
        raise SnapshotDamaged(f"{state} holds {len(history)} history blobs for the {len(shapes)} learned blobs of "
                              f"{model.name}: one of the two was cut short or overwritten")
    if net_shapes is not None:
        wanted = [s for layer in net_shapes.values() for s in layer]
        if len(wanted) != len(shapes) or not all(s.fits(w) for s, w in zip(shapes, wanted, strict=True)):
            raise SnapshotMismatch(
                f"{state} was written by another net: it has {len(shapes)} learned blobs "
                f"({', '.join(str(s) for s in shapes[:4])}{', ...' if len(shapes) > 4 else ''}), the net has "
                f"{len(wanted)} ({', '.join('x'.join(map(str, w)) for w in wanted[:4])}"
                f"{', ...' if len(wanted) > 4 else ''}). Nothing was changed. Fix: train this net under another "
                "snapshot_prefix, or start it afresh (--fresh), which moves these snapshots aside")
    return model


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def usable_snapshot(prefix: Path, *, cwd=paths.REPO, shapes=None, say=print) -> tuple[Path, int] | None:
    """The newest snapshot that matches its recorded checksums and passes check_snapshot(); damaged newer ones
    are moved aside (never deleted) with a message naming them. A good one with no record gets one now.
    SnapshotMismatch propagates: a whole snapshot of another net is the user's to decide about."""
    for n, state in snapshots(prefix):
        try:
            recorded = verify_checksums(state, say)
            check_snapshot(state, cwd=cwd, net_shapes=shapes)
        except SnapshotDamaged as e:
            files = (state, caffemodel_of(state), checksums_of(state))
            moved = [move_aside(f, "broken").name for f in files if f.exists()]
            say(f"[snapshots] {e}. Moved aside: {', '.join(moved)}; trying the next older snapshot.")
            continue
        if not recorded:
            record_checksums(state)
        return state, n
    return None


def _run_file(prefix: Path, name: str) -> bool:
    """Whether `name` is one of a run's own snapshot files, `<prefix>_iter_N.caffemodel|solverstate[.h5]|sha256`: not
    one the toolkit moved aside (`.broken`, `.mismatch`, ...), which --fresh keeps where it is."""
    own = r"_iter_\d+\.(caffemodel(\.h5)?|solverstate(\.h5)?|sha256)"
    return re.fullmatch(re.escape(prefix.name) + own, name) is not None


def replace_aside(prefix: Path, log: Path, say=print) -> Path | None:
    """Move a run's snapshots and log into `<prefix>.replaced-<time>/` (kept until a new run completes).
    Files moved aside earlier (`<snapshot>.broken`) stay where they are: they are never removed."""
    files = [f for f in prefix.parent.glob(prefix.name + "_iter_*") if f.is_file() and _run_file(prefix, f.name)]
    if log.exists():
        files.append(log)
    if not files:
        return None
    aside = prefix.parent / f"{prefix.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    aside.mkdir(parents=True)
    for f in files:
        os.rename(f, aside / f.name)
    say(f"[snapshots] starting afresh: the previous run ({len(files)} files) is moved to {aside}; it is removed "
        "once the new run has completed")
    return aside


def drop_replaced(prefix: Path, log: Path, say=print):
    """The new run completed: the runs it replaced (moved aside by --fresh) can go, that is their snapshots and
    log. Anything else in such a folder (a `.broken` snapshot an earlier version swept in with them) is moved
    back beside the prefix under a free name, never deleted."""
    for aside in sorted(prefix.parent.glob(f"{prefix.name}.replaced-*")):
        if not aside.is_dir() or aside.is_symlink():
            continue
        kept = []
        for f in sorted(aside.iterdir()):
            if f.is_file() and not f.is_symlink() and (_run_file(prefix, f.name) or f.name == log.name):
                f.unlink()
            else:
                kept.append(_move_back(f, prefix.parent).name)
        aside.rmdir()
        say(f"[snapshots] the new run is complete; removed the run it replaced ({aside.name})"
            + (f"; kept what had been moved aside, now beside it: {', '.join(kept)}" if kept else ""))


def _move_back(f: Path, folder: Path) -> Path:
    """Rename `f` into `folder` under its name, or `<name>.2`, ... if taken; never over an existing file."""
    for n in range(1, 10_000):
        target = folder / (f.name + (f".{n}" if n > 1 else ""))
        if target.exists() or target.is_symlink():
            continue
        os.rename(f, target)
        return target
    raise OSError(f"cannot find a free name in {folder} for {f}")
