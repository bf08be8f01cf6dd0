"""Run the `caffe` binary (train, test, time): a log file, a progress bar, clear errors, resume.

    result = train("models/q1/fashion-mnist/baseline/solver.prototxt", log="results/.../train.log")

Training resumes by itself from the newest good `.solverstate` of the solver's `snapshot_prefix`.
Ctrl-C (and SIGTERM) asks Caffe to stop the way it supports (SIGINT with `-sigint_effect stop` makes it
snapshot first), so the next call carries on from there. Paths inside prototxts are resolved against
`cwd`, the repository root by default, as the committed prototxts are written relative to it.

What is checked before Caffe starts, so that a mistake ends in one line naming the file:
  - snapshots, before "already trained" or a resume: the solverstate and its .caffemodel must parse,
    hold as many blobs as each other and as the net has learnable blobs, of the same shapes. A damaged
    one (a full disk, a kill during the write) is moved aside to `<name>.broken` and the next older
    one is used; one written by another net is refused;
  - the data: every LMDB whole (a truncated data.mdb kills Caffe with SIGBUS), every label of the
    LMDBs and ImageData lists that feed a loss within [0, the scoring layer's num_output), every
    ImageData image present, mean files readable BlobProtos, -weights a parsable file that fits;
  - one run at a time per snapshot prefix (tools.locks).
Starting afresh (`fresh=True`, `--fresh`) moves the old snapshots and log aside into
`<prefix>.replaced-<time>/`, which is removed only once the new run has completed; files the toolkit moved
aside (`.broken`) are never part of it, and are kept.
"""

import argparse
import contextlib
import functools
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tools import locks, paths
from tools.cli import exit_on
from tools.errors import ToolkitError
from tools.fileio import move_aside
from tools.progress import progress_bar
from tools.solver import read_solver

# The first line matching this is what a user needs to see when Caffe fails.
FATAL = re.compile(
    r"^F\d{4,8} |Check failed|Unknown layer type|Error parsing text-format|Unknown bottom blob|"
    r"has no field named|Cannot copy param|\*\*\* Aborted at|Segmentation fault|Aborted \(core dumped\)|"
    r"Traceback \(most recent call last\)|Error: "
)
ITERATION_LOSS = re.compile(r"Iteration (\d+) .*loss = ([-+\d.eE]+|nan|inf)")
ITERATION_LR = re.compile(r"Iteration (\d+), lr = ([-+\d.eE]+)")
SNAPSHOT_FILE = re.compile(r"_iter_(\d+)\.solverstate(\.h5)?$")


class CaffeError(ToolkitError, RuntimeError):
    """Caffe failed (or would fail); the message quotes its fatal line and names the log."""

    def __init__(self, message, log=None, fatal_line=None, signal_name=None):
        super().__init__(message)
        self.log, self.fatal_line, self.signal_name = log, fatal_line, signal_name


class InputError(CaffeError):
    """Input Caffe would mishandle (a label out of range, a truncated LMDB, a bad mean or weights file)."""


class SnapshotMismatch(CaffeError):
    """A snapshot that is whole but was written by another net: resuming it would fail or mix two nets."""


class SnapshotDamaged(ValueError):
    """A snapshot that does not parse or contradicts itself (truncated, half-written)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training: Caffe snapshotted; calling train() again resumes."""


# What a signal that ended caffe means to the user.
SIGNAL_WORDS = {
    signal.SIGKILL: "was killed (SIGKILL: kill -9, or the kernel's out-of-memory killer)",
    signal.SIGTERM: "was terminated (SIGTERM)",
    signal.SIGINT: "was interrupted (SIGINT)",
    signal.SIGHUP: "lost its terminal (SIGHUP)",
    signal.SIGXFSZ: "was stopped by SIGXFSZ: a file it wrote reached the file-size limit (ulimit -f)",
    signal.SIGBUS: "crashed with SIGBUS: a memory-mapped file it read (an LMDB?) is shorter than it says",
    signal.SIGSEGV: "crashed (SIGSEGV)",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGFPE: "crashed with SIGFPE (an integer division by zero: a solver setting such as stepsize 0?)",
}


@dataclass
class TrainResult:
    log: Path
    start_iter: int  # 0, or the snapshot it resumed from
    final_iter: int
    seconds: float
    resumed_from: Path | None = None
    already_done: bool = False


def gpu_args(gpu) -> list[str]:
    """`-gpu N` flags; refuse before Caffe starts when this Caffe cannot use a GPU."""
    from tools.device import DeviceError, check_gpu

    try:
        ids = check_gpu(gpu)
    except DeviceError as e:
        raise CaffeError(str(e)) from None
    return ["-gpu", ",".join(map(str, ids))] if ids else []


def latest_snapshot(solver_path, cwd=paths.REPO) -> tuple[Path, int] | None:
    """The newest `<snapshot_prefix>_iter_N.solverstate` of a solver, with N."""
    solver = read_solver(Path(cwd) / solver_path)
    if not solver.snapshot_prefix:
        return None
    prefix = Path(cwd) / solver.snapshot_prefix
    found = []
    for f in prefix.parent.glob(prefix.name + "_iter_*.solverstate*"):
        m = SNAPSHOT_FILE.search(f.name)
        if m:
            found.append((int(m.group(1)), f))
    if not found:
        return None
    n, f = max(found)
    return f, n


def _snapshots(prefix: Path) -> list[tuple[int, Path]]:
    """(N, path) of every `<prefix>_iter_N.solverstate[.h5]`, newest first."""
    found = []
    for f in prefix.parent.glob(prefix.name + "_iter_*.solverstate*"):
        m = SNAPSHOT_FILE.search(f.name)
        if m and f.name == f"{prefix.name}_iter_{m.group(1)}.solverstate{m.group(2) or ''}":
            found.append((int(m.group(1)), f))
    return sorted(found, reverse=True)


def _caffemodel_of(state: Path) -> Path:
    return state.with_name(state.name.replace(".solverstate", ".caffemodel"))


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
        model = _caffemodel_of(state)
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


_SHAPES_SCRIPT = """
import json, sys
import caffe
stages = json.loads(sys.argv[3])
net = caffe.Net(sys.argv[1], caffe.TRAIN, level=int(sys.argv[2]), stages=stages)
print("SHAPES " + json.dumps([[name, [list(b.data.shape) for b in blobs]] for name, blobs in net.params.items()]))
"""


def net_shapes(solver_param, cwd=paths.REPO, pythonpath=()) -> dict[str, list[tuple]] | None:
    """{layer: [learnable blob shapes]} of the solver's TRAIN net, as Caffe builds it, or None if it cannot
    be built (Caffe then says why when it runs). Built in a child process: a CHECK failure in net set-up
    aborts the process it happens in."""
    net = solver_param.net or solver_param.train_net
    if not net:
        return None
    path = Path(cwd) / net
    try:
        key = (str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest())
    except OSError:
        return None
    state = solver_param.train_state
    return _net_shapes(key, str(cwd), state.level, tuple(state.stage), tuple(map(str, pythonpath)))


@functools.cache
def _net_shapes(key, cwd, level, stages, pythonpath):
    env = {**paths.caffe_env(pythonpath), "GLOG_minloglevel": "2"}
    try:
        proc = subprocess.run([sys.executable, "-c", _SHAPES_SCRIPT, key[0], str(level), json.dumps(list(stages))],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("SHAPES ")), None)
    if proc.returncode != 0 or line is None:
        return None
    return {name: [tuple(s) for s in shapes] for name, shapes in json.loads(line[len("SHAPES "):])}


def usable_snapshot(prefix: Path, *, cwd=paths.REPO, shapes=None, say=print) -> tuple[Path, int] | None:
    """The newest snapshot that passes check_snapshot(); damaged newer ones are moved aside (never deleted)
    with a message naming them. SnapshotMismatch propagates: a whole snapshot of another net is the
    user's to decide about."""
    for n, state in _snapshots(prefix):
        try:
            check_snapshot(state, cwd=cwd, net_shapes=shapes)
            return state, n
        except SnapshotDamaged as e:
            moved = [move_aside(f, "broken").name for f in (state, _caffemodel_of(state)) if f.exists()]
            say(f"[caffe_runner] {e}. Moved aside: {', '.join(moved)}; trying the next older snapshot.")
    return None


def _run_file(prefix: Path, name: str) -> bool:
    """Whether `name` is one of a run's own snapshot files, `<prefix>_iter_N.caffemodel|solverstate[.h5]`: not
    one the toolkit moved aside (`.broken`, `.mismatch`, ...), which --fresh keeps where it is."""
    return re.fullmatch(re.escape(prefix.name) + r"_iter_\d+\.(caffemodel|solverstate)(\.h5)?", name) is not None


def _replace_aside(prefix: Path, log: Path, say=print) -> Path | None:
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
    say(f"[caffe_runner] starting afresh: the previous run ({len(files)} files) is moved to {aside}; it is removed "
        "once the new run has completed")
    return aside


def _drop_replaced(prefix: Path, log: Path, say=print):
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
        say(f"[caffe_runner] the new run is complete; removed the run it replaced ({aside.name})"
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


def _ends_mid_line(log: Path) -> bool:
    try:
        with open(log, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:  # missing or empty
        return False


def run(args, log, *, cwd=paths.REPO, total=None, initial=0, desc="caffe", progress=True, append=False,
        pythonpath=(), after_stop=None, caffe=None):
    """Start `caffe ARGS`, stream its output into `log` (and a progress bar); return the output lines.

    Raises CaffeError quoting the first fatal line when Caffe exits non-zero, or naming the signal that
    ended it; TrainingInterrupted when Ctrl-C or SIGTERM stopped it (after it snapshotted); OSError
    naming the log when the log cannot be written (a full disk), after stopping Caffe. `pythonpath` adds
    folders for `Python` layers; `after_stop()` returns a sentence on how to carry on, for the messages.
    `caffe`: another `caffe` binary (default: the one `make setup` wired into .venv).
    """
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(caffe or paths.caffe_tool("caffe")), *map(str, args)]
    lines, fatal, stats = [], None, {}
    write_error = None
    try:
        out = open(log, "a" if append else "w")  # noqa: SIM115 - closed below, also after a write error
        # the marker must start a line: a killed run can leave its last line without a newline
        out.write(("\n" if append and _ends_mid_line(log) else "") + f"# toolkit: {' '.join(cmd)} (cwd {cwd})\n")
        out.flush()
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(log)) from None
    try:
        # Own session: Ctrl-C reaches only us, and we pass on exactly one SIGINT.
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=paths.caffe_env(pythonpath), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", start_new_session=True,
        )
    except BaseException:
        out.close()
        raise
    # a bar on a terminal; a plain line every few percent in a log file
    bar = progress_bar(total=total, initial=initial, desc=desc, unit="it", enabled=progress, file=sys.stderr)
    # Ctrl-C and SIGTERM are handled by flags, not exceptions: an exception raised inside the read loop can
    # drop a chunk of Caffe's output that was read but not yet handed out as lines
    stop = {"by": None, "killed": False}
    restore = {}

    def on_signal(signum, frame):
        if stop["by"]:  # the second one: stop waiting for the snapshot
            stop["killed"] = True
            proc.kill()
            return
        stop["by"] = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        proc.send_signal(signal.SIGINT)
        bar.write(f"{stop['by']}: asking Caffe to snapshot and stop ({stop['by']} again to kill it)...")

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            restore[sig] = signal.signal(sig, on_signal)
    try:
        for line in proc.stdout:
            if write_error is None:
                try:
                    out.write(line)
                except OSError as e:
                    # the disk is full (or a size limit reached): stop Caffe the way that snapshots, and
                    # keep reading so that it is not blocked on a full pipe
                    write_error = e
                    proc.send_signal(signal.SIGINT)
            lines.append(line)
            if fatal is None and FATAL.search(line):
                fatal = line.strip()
            _advance(bar, stats, line)
        returncode = proc.wait()
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        for sig, handler in restore.items():
            signal.signal(sig, handler)
        bar.close()
        try:
            out.close()
        except OSError as e:
            write_error = write_error or e
    if stop["killed"]:
        raise KeyboardInterrupt
    stopped_by = stop["by"]
    next_step = after_stop() if after_stop else "run the same command again"
    if write_error is not None:
        raise OSError(write_error.errno, write_error.strerror, str(log))
    if stopped_by:
        how = "interrupted (Ctrl-C)" if stopped_by == "Ctrl-C" else "terminated (SIGTERM)"
        if args[0] != "train":  # only training snapshots on SIGINT
            raise TrainingInterrupted(f"{how}: caffe {args[0]} stopped")
        raise TrainingInterrupted(f"{how}: Caffe saved a snapshot and stopped; {next_step}")
    if returncode < 0 and not (fatal and returncode == -signal.SIGABRT):  # a CHECK failure aborts: quoted below
        sig = signal.Signals(-returncode)
        words = SIGNAL_WORDS.get(sig, f"was ended by {sig.name}")
        said = f"; its fatal line: {fatal}" if fatal else ""
        raise CaffeError(f"caffe {args[0]} {words}{said}. {next_step[0].upper()}{next_step[1:]}\n  log: {log}",
                         log=log, fatal_line=fatal, signal_name=sig.name)
    if returncode != 0:
        what = fatal or (lines[-1].strip() if lines else f"exit status {returncode}")
        raise CaffeError(f"caffe {args[0]} failed: {what}\n  log: {log}", log=log, fatal_line=fatal)
    return lines


def _advance(bar, stats, line):
    """Move the bar to the iteration Caffe reports, with the latest loss and learning rate."""
    for key, pattern in (("loss", ITERATION_LOSS), ("lr", ITERATION_LR)):
        m = pattern.search(line)
        if m:
            it = int(m.group(1))
            if bar.total is not None and it > bar.n:
                bar.update(it - bar.n)
            stats[key] = m.group(2)
            bar.set_postfix(stats, refresh=False)
            return


def train(solver, log, *, weights=None, snapshot=None, gpu=None, resume=True, fresh=False, cwd=paths.REPO,
          progress=True, desc=None, pythonpath=(), say=None, caffe=None) -> TrainResult:
    """`caffe train`. Resumes from the newest good snapshot unless `snapshot` is given or `fresh`.

    `fresh` (or `resume=False`) moves the snapshots of the solver's prefix and the log aside and trains
    from the start; what was moved is removed once the new run completes. `weights` (fine-tuning) only
    applies to a fresh start: a resumed run takes everything from the solverstate, as Caffe refuses
    `-weights` together with `-snapshot`. `say` prints the runner's notes (default: stderr). `caffe`:
    another `caffe` binary (default: the one in .venv).
    """
    say = say or functools.partial(print, file=sys.stderr)
    solver, log = Path(solver), Path(log)
    solver_param = read_solver(Path(cwd) / solver)  # a relative path is relative to cwd, as for Caffe
    max_iter = solver_param.max_iter
    if max_iter < 1:
        raise InputError(f"{solver}: max_iter is {max_iter}: nothing would be trained. Fix: set max_iter to a "
                         "positive number of iterations")
    extra = gpu_args(gpu)  # a GPU asked of a CPU-only build: refused before anything else
    check_inputs(solver_param, cwd)
    prefix = Path(cwd) / solver_param.snapshot_prefix if solver_param.snapshot_prefix else None
    lock = locks.locked(prefix.parent, name=f".{prefix.name}.lock", what=f"snapshot prefix {prefix}") if prefix \
        else contextlib.nullcontext()
    with lock:
        if prefix and (fresh or not resume):
            _replace_aside(prefix, log, say)
        shapes = None
        start, resumed_from = 0, None
        if snapshot is None and resume and not fresh and prefix:
            if _snapshots(prefix):
                shapes = net_shapes(solver_param, cwd, pythonpath)
                found = usable_snapshot(prefix, cwd=cwd, shapes=shapes, say=say)
                if found:
                    resumed_from, start = found
                    if start >= max_iter:
                        _drop_replaced(prefix, log, say)
                        return TrainResult(log, start, start, 0.0, resumed_from, already_done=True)
        elif snapshot is not None:
            resumed_from = Path(snapshot)
            try:
                check_snapshot(Path(cwd) / resumed_from, cwd=cwd, net_shapes=net_shapes(solver_param, cwd, pythonpath))
            except SnapshotDamaged as e:
                raise InputError(f"{e}. Fix: give an older snapshot, or leave -snapshot out to resume from the newest "
                                 "good one") from None
            m = SNAPSHOT_FILE.search(resumed_from.name)
            start = int(m.group(1)) if m else 0
        args = ["train", f"-solver={solver}", "-sigint_effect=stop", "-sighup_effect=snapshot", *extra]
        if resumed_from:
            args.append(f"-snapshot={resumed_from}")
        elif weights:
            check_weights(weights, solver_param, cwd, pythonpath)
            args.append(f"-weights={weights}")

        def after_stop():
            latest = usable_snapshot(prefix, cwd=cwd, say=say) if prefix else None
            if latest is None:
                return "no snapshot was saved: running the same command again starts from the beginning"
            return f"the last good snapshot is {latest[0]}: run the same command again to resume from it"

        t0 = time.time()
        # a log that exists is appended to (the marker separates runs): a fresh start moved the old one aside
        run(args, log, cwd=cwd, total=max_iter, initial=start, desc=desc or solver.parent.name,
            progress=progress, append=True, pythonpath=pythonpath, after_stop=after_stop, caffe=caffe)
        if prefix:
            # Caffe exits 0 even when its last snapshot could not be written whole (a full disk)
            final = prefix.with_name(f"{prefix.name}_iter_{max_iter}.solverstate")
            if final.exists():
                try:
                    check_snapshot(final, cwd=cwd)
                except SnapshotDamaged as e:
                    moved = [move_aside(f, "broken").name for f in (final, _caffemodel_of(final)) if f.exists()]
                    raise CaffeError(f"caffe finished, but {e} (is the disk full?). Moved aside: {', '.join(moved)}. "
                                     "Fix: free disk space and run the same command again; it resumes from the last "
                                     f"good snapshot\n  log: {log}", log=log) from None
            _drop_replaced(prefix, log, say)
    return TrainResult(log, start, max_iter, time.time() - t0, resumed_from)


def check_weights(weights, solver_param, cwd=paths.REPO, pythonpath=()):
    """-weights must be a Caffe weights file whose layers fit the net by Caffe's rules (tools.weights),
    else Caffe aborts the process (or, for random bytes, fails to parse it without naming it)."""
    from tools import weights as caffe_weights

    path = Path(cwd) / weights
    if not path.exists():
        raise InputError(f"weights file {weights} not found (cwd {cwd}). Fix: give the path of a .caffemodel")
    try:
        caffe_weights.read_net(path)
        shapes = net_shapes(solver_param, cwd, pythonpath)
        if shapes is not None:
            caffe_weights.check_fits(shapes, path)
    except ValueError as e:
        raise InputError(str(e)) from None


def _num_outputs(net) -> dict[str, tuple[int, str]]:
    """{label blob: (classes, scoring layer)} for each loss/accuracy layer fed by an InnerProduct or
    Convolution: Caffe's softmax loss on the CPU takes any label without a check."""
    producers = {}
    for layer in net.layer:
        for top in layer.top:
            if layer.type == "InnerProduct":
                producers[top] = (layer.inner_product_param.num_output, layer.name)
            elif layer.type == "Convolution":
                producers[top] = (layer.convolution_param.num_output, layer.name)
            elif top not in layer.bottom:  # an in-place layer keeps the producer
                producers.pop(top, None)
    classes = {}
    for layer in net.layer:
        if layer.type in ("SoftmaxWithLoss", "Accuracy", "MultinomialLogisticLoss", "InfogainLoss") \
                and len(layer.bottom) >= 2 and layer.bottom[0] in producers:
            k = producers[layer.bottom[0]]
            if layer.bottom[1] not in classes or k[0] < classes[layer.bottom[1]][0]:
                classes[layer.bottom[1]] = k
    return classes


@functools.cache
def _list_labels(path: str, size: int, mtime_ns: int):
    """[(line number, image, label)] of an ImageData list (cached while the file is unchanged)."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.strip().rsplit(maxsplit=1)  # Caffe: the label is the last field, the path may hold spaces
        if not parts:
            continue
        if len(parts) < 2:
            raise InputError(f"{path}:{n}: '{line.strip()}' has no label. Fix: write 'image_path label' lines")
        try:
            rows.append((n, parts[0], int(parts[1])))
        except ValueError:
            raise InputError(f"{path}:{n}: label '{parts[1]}' is not an integer. Fix: write 'image_path label' "
                             "lines with class indices from 0") from None
    return rows


def check_inputs(solver_param, cwd=paths.REPO):
    """The data every net of the solver reads, checked before Caffe sees it (see the module's docstring)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    from tools import lmdb_io

    files = [f for f in (solver_param.net, solver_param.train_net, *solver_param.test_net) if f]
    for net_file in dict.fromkeys(files):
        net = caffe_pb2.NetParameter()
        try:
            text_format.Merge((Path(cwd) / net_file).read_text(), net)
        except (OSError, text_format.ParseError):
            continue  # Caffe names the file and the line itself
        classes = _num_outputs(net)
        for layer in net.layer:
            where = f"(layer '{layer.name}' of {net_file})"
            if layer.HasField("transform_param") and layer.transform_param.mean_file:
                mean = Path(cwd) / layer.transform_param.mean_file
                try:
                    lmdb_io.read_mean(mean)
                except (ValueError, FileNotFoundError) as e:
                    raise InputError(f"{e} {where}") from None
            k = classes.get(layer.top[1]) if len(layer.top) > 1 else None
            if layer.type == "Data" and layer.data_param.backend == caffe_pb2.DataParameter.LMDB:
                source = Path(cwd) / layer.data_param.source
                try:
                    lmdb_io.check_pages(source, fix=f"prepare the data again {where}")
                    counts = lmdb_io.label_counts(source) if k else {}
                except lmdb_io.LmdbError as e:
                    raise InputError(str(e)) from None
                bad = sorted(label for label in counts if not 0 <= label < k[0])
                if bad:
                    raise InputError(
                        f"{source} holds {counts[bad[0]]} record(s) with label {bad[0]}, outside 0..{k[0] - 1}: the "
                        f"net's layer '{k[1]}' scores {k[0]} classes {where}. Fix: write the LMDB with labels from 0 "
                        f"to {k[0] - 1}, or give '{k[1]}' num_output {max(counts) + 1}")
            elif layer.type == "ImageData":
                p = layer.image_data_param
                source = Path(cwd) / p.source
                if not source.is_file():
                    raise InputError(f"image list {source} not found {where}. Fix: create it, or fix the source path")
                st = source.stat()
                rows = _list_labels(str(source), st.st_size, st.st_mtime_ns)
                if not rows:
                    raise InputError(f"{source} lists no images {where}. Fix: write 'image_path label' lines")
                for n, image, label in rows:
                    if k and not 0 <= label < k[0]:
                        raise InputError(
                            f"{source}:{n}: label {label} is outside 0..{k[0] - 1}: the net's layer '{k[1]}' scores "
                            f"{k[0]} classes {where}. Fix: correct the label (class indices count from 0), or give "
                            f"'{k[1]}' num_output {max(r[2] for r in rows) + 1}")
                    # Caffe builds the path by string concatenation: root_folder + name
                    if not (Path(cwd) / (p.root_folder + image)).is_file():
                        raise InputError(f"{source}:{n}: image {p.root_folder + image} not found (cwd {cwd}) {where}. "
                                         "Fix: fetch the image again (download_wikiart.py fetches what is missing), "
                                         "or remove the line")


def test(model, weights, log, *, iterations=50, stages=(), gpu=None, cwd=paths.REPO,
         progress=False) -> dict[str, float]:
    """`caffe test`: the net outputs averaged over `iterations` batches, e.g. {'accuracy': 0.83}.
    `stages` picks the TEST net of a multi-stage prototxt (e.g. ["val"])."""
    args = ["test", f"-model={model}", f"-weights={weights}", f"-iterations={iterations}", *gpu_args(gpu)]
    if stages:
        args.append(f"-stage={','.join(stages)}")
    lines = run(args, log, cwd=cwd, progress=progress, desc="test")
    scores = {}
    for line in lines:
        m = re.search(r"\] (\w[\w/]*) = ([-+\d.eE]+|nan|inf)(?: \(\*|$)", line.strip())
        if m and "Batch" not in line:
            scores[m.group(1)] = float(m.group(2))
    return scores


def time_net(model, log, *, iterations=10, gpu=None, phase=None, cwd=paths.REPO, pythonpath=(), caffe=None) -> dict:
    """`caffe time`: average forward, backward and forward-backward ms, and per-layer ms. `caffe`: another
    `caffe` binary (default: the one in .venv)."""
    args = ["time", f"-model={model}", f"-iterations={iterations}", *gpu_args(gpu)]
    if phase:
        args.append(f"-phase={phase}")
    lines = run(args, log, cwd=cwd, progress=False, pythonpath=pythonpath, caffe=caffe)
    result, layers = {}, {}
    for line in lines:
        m = re.search(r"Average (Forward|Backward|Forward-Backward)(?: pass)?: ([\d.]+) ms", line)
        if m:
            result[m.group(1).lower()] = float(m.group(2))
        m = re.search(r"\]\s+(\S+)\s+(forward|backward): ([\d.]+) ms", line)
        if m:
            layers.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
    if "forward-backward" not in result:
        raise CaffeError(f"caffe time printed no 'Average Forward-Backward' line\n  log: {log}", log=log)
    result["layers"] = layers
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.caffe_runner",
        description="Run `caffe train` with a log, a progress bar and automatic resume from the newest good snapshot.",
    )
    ap.add_argument("solver", help="solver.prototxt")
    ap.add_argument("--log", required=True, help="log file to write (appended to when resuming)")
    ap.add_argument("--weights", help="initial weights (.caffemodel) for fine-tuning")
    ap.add_argument("--gpu", default=None, help="GPU id(s), e.g. 0 or 0,1 (needs a CUDA build)")
    ap.add_argument("--fresh", "--no-resume", dest="fresh", action="store_true",
                    help="start from scratch: the old snapshots and log are moved aside (into <prefix>.replaced-*/), "
                         "and removed once the new run completes")
    ap.add_argument("--cwd", default=str(paths.REPO), help="folder the prototxt paths are relative to")
    a = ap.parse_args(argv)
    with exit_on(FileNotFoundError, ValueError):
        r = train(a.solver, a.log, weights=a.weights, gpu=a.gpu, fresh=a.fresh, cwd=a.cwd)
    if r.already_done:
        print(f"already trained: {r.final_iter} iterations (snapshot {r.resumed_from}); --fresh trains it again")
    else:
        print(f"done: iterations {r.start_iter}..{r.final_iter}, {r.seconds:.1f} s, log {r.log}")


if __name__ == "__main__":
    main()
