"""Run the `caffe` binary (train, test, time): a log file, a progress bar, clear errors, resume.

    result = train("models/q1/fashion-mnist/baseline/solver.prototxt", log="results/.../train.log")

Training resumes by itself from the newest good `.solverstate` of the solver's `snapshot_prefix`
(tools.snapshots finds and checks it). Ctrl-C (and SIGTERM) asks Caffe to stop the way it supports (SIGINT
with `-sigint_effect stop` makes it snapshot first), so the next call carries on from there. Paths inside
prototxts are resolved against `cwd`, the repository root by default, as the committed prototxts are
written relative to it. Before Caffe starts, tools.preflight checks its inputs; one run at a time per
snapshot prefix (tools.locks). Starting afresh (`fresh=True`, `--fresh`) moves the old snapshots and log
aside (tools.snapshots.replace_aside) until the new run has completed.
"""

import argparse
import contextlib
import errno
import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tools import caffe_log, locks, paths, preflight, snapshots
from tools.cli import caffe_disk_full, disk_full_line, disk_is_full, exit_on
from tools.errors import ToolkitError
from tools.fileio import move_aside
from tools.preflight import InputError
from tools.progress import progress_bar
from tools.snapshots import SnapshotDamaged, caffemodel_of, check_snapshot, usable_snapshot
from tools.solver import read_solver

# The first line matching this is what a user needs to see when Caffe fails.
FATAL = re.compile(
    r"^F\d{4,8} |Check failed|Unknown layer type|Error parsing text-format|Unknown bottom blob|"
    r"has no field named|Cannot copy param|\*\*\* Aborted at|Segmentation fault|Aborted \(core dumped\)|"
    r"Traceback \(most recent call last\)|Error: "
)
ITERATION_LOSS = re.compile(r"Iteration (\d+) .*loss = ([-+\d.eE]+|nan|inf)")
ITERATION_LR = re.compile(r"Iteration (\d+), lr = ([-+\d.eE]+)")


class CaffeError(ToolkitError, RuntimeError):
    """Caffe failed (or would fail); the message quotes its fatal line and names the log."""

    def __init__(self, message, log=None, fatal_line=None, signal_name=None):
        super().__init__(message)
        self.log, self.fatal_line, self.signal_name = log, fatal_line, signal_name


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


def run(args, log, *, cwd=paths.REPO, total=None, initial=0, desc="caffe", progress=True, append=False,
        pythonpath=(), after_stop=None, caffe=None, on_line=None, writes=()):
    """Start `caffe ARGS` writing its output into `log`, follow it with a progress bar; return the lines.

    Caffe writes the log itself (glog writes each line in one unbuffered write): the file is never behind
    what Caffe printed, and a runner killed by any means loses none of it. Raises CaffeError quoting the
    first fatal line when Caffe exits non-zero, or naming the signal that ended it; TrainingInterrupted when
    Ctrl-C, SIGTERM or a closed terminal (SIGHUP) stopped it (after it snapshotted); OSError (ENOSPC)
    naming the folder when Caffe failed on a full disk. `pythonpath` adds folders for `Python` layers;
    `after_stop()` returns a sentence on how to carry on, for the messages. `caffe`: another `caffe`
    binary (default: the one `make setup` wired into .venv). `on_line(line, fatal)` sees each line as it comes.
    `writes`: other paths Caffe writes (a snapshot prefix), looked at with the log when it fails on a full disk.
    """
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(caffe or paths.caffe_tool("caffe")), *map(str, args)]
    try:
        with open(log, "a" if append else "w") as out:
            # the marker must start a line: a killed run can leave its last line without a newline
            start = "\n" if append and caffe_log.ends_mid_line(log) else ""
            out.write(f"{start}# toolkit: {' '.join(cmd)} (cwd {cwd})\n")
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(log)) from None
    try:
        offset = os.fstat(fd).st_size
        # Caffe also holds this process's locks (one flock, shared by the inherited descriptor): a runner
        # killed mid-run leaves its folder locked until Caffe, stopping, has written its snapshot
        proc = subprocess.Popen(cmd, cwd=cwd, env=paths.caffe_env(pythonpath), stdin=subprocess.DEVNULL,
                                stdout=fd, stderr=fd, pass_fds=locks.held_fds(),
                                # own session: Ctrl-C on the terminal reaches only the runner, which passes on
                                # exactly one SIGINT; so does the terminal's SIGHUP
                                start_new_session=True,
                                preexec_fn=functools.partial(caffe_log.stop_with_parent, os.getpid()))
    finally:
        os.close(fd)
    lines, fatal, stats = [], None, {}
    # a bar on a terminal; a plain line every few percent in a log file
    bar = progress_bar(total=total, initial=initial, desc=desc, unit="it", enabled=progress, file=sys.stderr)
    # Signals are handled by flags, not exceptions: an exception inside the loop would kill Caffe before
    # it has snapshotted
    stop = {"by": None, "killed": False, "no_room": None}
    restore = {}

    def watch(size, look_at_disk):
        if stop["by"] is None and proc.poll() is None:
            stop["no_room"] = caffe_log.room_left(log, size, look_at_disk)
            if stop["no_room"] is not None:  # stop while a snapshot still fits, and say why
                stop["by"] = "no room"
                proc.send_signal(signal.SIGINT)

    def on_signal(signum, frame):
        if signum == signal.SIGHUP:
            bar.disable = True  # the terminal is gone: writing to it fails (EIO)
        if stop["by"]:  # the second one: stop waiting for the snapshot
            stop["killed"] = True
            proc.kill()
            return
        stop["by"] = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}[signum]
        proc.send_signal(signal.SIGINT)
        caffe_log.note(log, f"{stop['by']}: asked caffe to snapshot and stop")
        with contextlib.suppress(OSError):
            bar.write(f"{stop['by']}: asking Caffe to snapshot and stop ({stop['by']} again to kill it)...")

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            restore[sig] = signal.signal(sig, on_signal)
    try:
        for line in caffe_log.follow(log, offset, proc, watch):
            lines.append(line)
            is_fatal = FATAL.search(line) is not None
            if fatal is None and is_fatal:
                fatal = line.strip()
            if on_line is not None:
                on_line(line, is_fatal)
            with contextlib.suppress(OSError):  # a terminal that went away must not stop the run
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
        with contextlib.suppress(OSError):
            bar.close()
    if stop["killed"]:
        raise KeyboardInterrupt
    if stop["no_room"] is not None:
        raise stop["no_room"]
    stopped_by = stop["by"]
    next_step = after_stop() if after_stop else "run the same command again"
    if stopped_by:
        how = {"Ctrl-C": "interrupted (Ctrl-C)", "SIGTERM": "terminated (SIGTERM)",
               "SIGHUP": "the terminal closed (SIGHUP)"}[stopped_by]
        if args[0] != "train":  # only training snapshots on SIGINT
            raise TrainingInterrupted(f"{how}: caffe {args[0]} stopped")
        raise TrainingInterrupted(f"{how}: Caffe saved a snapshot and stopped; {next_step}")
    if returncode != 0:
        # Caffe and LMDB fail a write on a full disk with their own words, not ENOSPC: say what it was
        # (no fatal line at all: it was lost to the full disk with the rest of the log)
        for target in (log, *map(Path, writes)):
            if (fatal is None and disk_is_full(target.parent)) or caffe_disk_full(fatal, target):
                raise OSError(errno.ENOSPC, f"caffe {args[0]} could not write there (log {log})", str(target))
    if returncode < 0 and not (fatal and returncode == -signal.SIGABRT):  # a CHECK failure aborts: quoted below
        sig = signal.Signals(-returncode)
        words = SIGNAL_WORDS.get(sig, f"was ended by {sig.name}")
        said = f"; its fatal line: {fatal}" if fatal else ""
        raise CaffeError(f"caffe {args[0]} {words}{said}. {next_step[0].upper()}{next_step[1:]}; log: {log}",
                         log=log, fatal_line=fatal, signal_name=sig.name)
    if returncode != 0:
        what = fatal or (lines[-1].strip() if lines else f"exit status {returncode}")
        raise CaffeError(f"caffe {args[0]} failed: {what}; log: {log}", log=log, fatal_line=fatal)
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
          progress=True, desc=None, pythonpath=(), say=None, caffe=None, weights_checked=False) -> TrainResult:
    """`caffe train`. Resumes from the newest good snapshot unless `snapshot` is given or `fresh`.

    `fresh` (or `resume=False`) moves the snapshots of the solver's prefix and the log aside and trains
    from the start; what was moved is removed once the new run completes. `weights` (fine-tuning) only
    applies to a fresh start: a resumed run takes everything from the solverstate, as Caffe refuses
    `-weights` together with `-snapshot`; `weights_checked`: the caller has checked that they fit this net.
    `say` prints the runner's notes (default: stderr). `caffe`: another `caffe` binary (default: the one in
    .venv).
    """
    say = say or functools.partial(print, file=sys.stderr)
    solver, log = Path(solver), Path(log)
    solver_param = read_solver(Path(cwd) / solver)  # a relative path is relative to cwd, as for Caffe
    max_iter = solver_param.max_iter
    if max_iter < 1:
        raise InputError(f"{solver}: max_iter is {max_iter}: nothing would be trained. Fix: set max_iter to a "
                         "positive number of iterations")
    extra = gpu_args(gpu)  # a GPU asked of a CPU-only build: refused before anything else
    preflight.check_inputs(solver_param, cwd)
    prefix = Path(cwd) / solver_param.snapshot_prefix if solver_param.snapshot_prefix else None
    lock = locks.locked(prefix.parent, name=f".{prefix.name}.lock", what=f"snapshot prefix {prefix}") if prefix \
        else contextlib.nullcontext()
    with lock:
        if prefix and (fresh or not resume):
            snapshots.replace_aside(prefix, log, say)
        shapes = None
        start, resumed_from = 0, None
        if snapshot is None and resume and not fresh and prefix:
            if snapshots.snapshots(prefix):
                shapes = preflight.net_shapes(solver_param, cwd, pythonpath)
                found = usable_snapshot(prefix, cwd=cwd, shapes=shapes, say=say)
                if found:
                    resumed_from, start = found
                    if start >= max_iter:
                        snapshots.drop_replaced(prefix, log, say)
                        return TrainResult(log, start, start, 0.0, resumed_from, already_done=True)
        elif snapshot is not None:
            resumed_from = Path(snapshot)
            try:
                shapes = preflight.net_shapes(solver_param, cwd, pythonpath)
                snapshots.verify_checksums(Path(cwd) / resumed_from, say)
                check_snapshot(Path(cwd) / resumed_from, cwd=cwd, net_shapes=shapes)
            except SnapshotDamaged as e:
                raise InputError(f"{e}. Fix: give an older snapshot, or leave -snapshot out to resume from the newest "
                                 "good one") from None
            m = snapshots.SNAPSHOT_FILE.search(resumed_from.name)
            start = int(m.group(1)) if m else 0
        args = ["train", f"-solver={solver}", "-sigint_effect=stop", "-sighup_effect=snapshot", *extra]
        if resumed_from:
            args.append(f"-snapshot={resumed_from}")
        elif weights:
            if not weights_checked:
                preflight.check_weights(weights, solver_param, cwd, pythonpath)
            args.append(f"-weights={weights}")

        def after_stop():
            latest = usable_snapshot(prefix, cwd=cwd, say=say) if prefix else None
            if latest is None:
                return "no snapshot was saved: running the same command again starts from the beginning"
            return f"the last good snapshot is {latest[0]}: run the same command again to resume from it"

        t0 = time.time()
        # a log that exists is appended to (the marker separates runs): a fresh start moved the old one aside
        run(args, log, cwd=cwd, total=max_iter, initial=start, desc=desc or solver.parent.name,
            progress=progress, append=True, pythonpath=pythonpath, after_stop=after_stop, caffe=caffe,
            on_line=snapshots.ChecksumRecorder(cwd), writes=[prefix] if prefix else [])
        if prefix:
            # Caffe exits 0 even when its last snapshot could not be written whole (a full disk)
            final = prefix.with_name(f"{prefix.name}_iter_{max_iter}.solverstate")
            if final.exists():
                try:
                    check_snapshot(final, cwd=cwd)
                    if not snapshots.checksums_of(final).exists():
                        snapshots.record_checksums(final)
                except SnapshotDamaged as e:
                    moved = [move_aside(f, "broken").name for f in (final, caffemodel_of(final)) if f.exists()]
                    fix = disk_full_line(prefix.parent) if disk_is_full(prefix.parent) else (
                        "is the disk full? Fix: free disk space and run the same command again; it resumes from the "
                        "last good snapshot")
                    raise CaffeError(f"caffe finished, but {e}. Moved aside: {', '.join(moved)}. {fix}; log: {log}",
                                     log=log) from None
            snapshots.drop_replaced(prefix, log, say)
    return TrainResult(log, start, max_iter, time.time() - t0, resumed_from)


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
        raise CaffeError(f"caffe time printed no 'Average Forward-Backward' line; log: {log}", log=log)
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
