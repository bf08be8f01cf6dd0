"""Run the `caffe` binary (train, test, time): a log file, a progress bar, clear errors, resume.

    result = train("models/q1/fashion-mnist/baseline/solver.prototxt", log="results/.../train.log")

Training resumes by itself from the newest `.solverstate` of the solver's `snapshot_prefix`. Ctrl-C
asks Caffe to stop the way it supports (SIGINT with `-sigint_effect stop` makes it snapshot first),
so the next call carries on from there. Paths inside prototxts are resolved against `cwd`, the
repository root by default, as the committed prototxts are written relative to it.
"""

import argparse
import contextlib
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from tools import paths
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


class CaffeError(RuntimeError):
    """Caffe failed (or would fail); the message quotes its fatal line and names the log."""

    def __init__(self, message, log=None, fatal_line=None):
        super().__init__(message)
        self.log, self.fatal_line = log, fatal_line


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: Caffe snapshotted; calling train() again resumes."""


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
    if gpu is None or str(gpu).strip() in ("", "cpu", "-1"):
        return []
    if not paths.is_gpu_build():
        raise CaffeError(
            f"GPU={gpu} asked for, but {paths.caffe_prefix()} is a CPU-only Caffe build. "
            "Build the CUDA variant with `make setup CAFFE_GPU=1`, or leave GPU unset to run on the CPU."
        )
    return ["-gpu", str(gpu).replace(" ", "")]


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


def run(args, log, *, cwd=paths.REPO, total=None, initial=0, desc="caffe", progress=True, append=False,
        pythonpath=()):
    """Start `caffe ARGS`, stream its output into `log` (and a progress bar); return the output lines.

    Raises CaffeError quoting the first fatal line when Caffe exits non-zero. `pythonpath` adds
    folders for `Python` layers.
    """
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(paths.caffe_tool("caffe")), *map(str, args)]
    lines, fatal, stats = [], None, {}
    bar = tqdm(total=total, initial=initial, desc=desc, unit="it", disable=not progress, file=sys.stderr)
    with open(log, "a" if append else "w") as out:
        out.write(f"# toolkit: {' '.join(cmd)} (cwd {cwd})\n")
        out.flush()
        # Own session: Ctrl-C reaches only us, and we pass on exactly one SIGINT.
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=paths.caffe_env(pythonpath), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", start_new_session=True,
        )
        interrupted = False
        while True:
            try:
                for line in proc.stdout:
                    out.write(line)
                    lines.append(line)
                    if fatal is None and FATAL.search(line):
                        fatal = line.strip()
                    _advance(bar, stats, line)
                break
            except KeyboardInterrupt:
                if interrupted:  # a second Ctrl-C: stop waiting for the snapshot
                    proc.kill()
                    raise
                interrupted = True
                proc.send_signal(signal.SIGINT)
                bar.write("Ctrl-C: asking Caffe to snapshot and stop (Ctrl-C again to kill it)...")
        returncode = proc.wait()
        out.flush()
    bar.close()
    if interrupted:
        raise TrainingInterrupted(f"caffe interrupted; log: {log}")
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


def train(solver, log, *, weights=None, snapshot=None, gpu=None, resume=True, cwd=paths.REPO,
          progress=True, desc=None, pythonpath=()) -> TrainResult:
    """`caffe train`. Resumes from the newest snapshot unless `resume=False` or `snapshot` is given.

    `weights` (fine-tuning) only applies to a fresh start: a resumed run takes everything from the
    solverstate, as Caffe refuses `-weights` together with `-snapshot`.
    """
    solver = Path(solver)
    max_iter = read_solver(Path(cwd) / solver).max_iter  # a relative path is relative to cwd, as for Caffe
    start, resumed_from = 0, None
    if snapshot is None and resume:
        latest = latest_snapshot(solver, cwd)
        if latest:
            resumed_from, start = latest
            if start >= max_iter:
                return TrainResult(Path(log), start, start, 0.0, resumed_from, already_done=True)
    elif snapshot is not None:
        resumed_from = Path(snapshot)
        m = SNAPSHOT_FILE.search(resumed_from.name)
        start = int(m.group(1)) if m else 0
    args = ["train", f"-solver={solver}", "-sigint_effect=stop", "-sighup_effect=snapshot", *gpu_args(gpu)]
    if resumed_from:
        args.append(f"-snapshot={resumed_from}")
    elif weights:
        if not (Path(cwd) / weights).exists():
            raise CaffeError(f"weights file {weights} not found (cwd {cwd})")
        args.append(f"-weights={weights}")
    t0 = time.time()
    run(args, log, cwd=cwd, total=max_iter, initial=start, desc=desc or solver.parent.name,
        progress=progress, append=resumed_from is not None, pythonpath=pythonpath)
    return TrainResult(Path(log), start, max_iter, time.time() - t0, resumed_from)


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


def time_net(model, log, *, iterations=10, gpu=None, phase=None, cwd=paths.REPO, pythonpath=()) -> dict:
    """`caffe time`: average forward, backward and forward-backward ms, and per-layer ms."""
    args = ["time", f"-model={model}", f"-iterations={iterations}", *gpu_args(gpu)]
    if phase:
        args.append(f"-phase={phase}")
    lines = run(args, log, cwd=cwd, progress=False, pythonpath=pythonpath)
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


@contextlib.contextmanager
def cli_errors(*expected):
    """For command lines that train: expected failures end in one line, not a traceback; Ctrl-C says how
    to resume."""
    try:
        yield
    except (CaffeError, paths.SetupError, *expected) as e:
        sys.exit(f"error: {e}")
    except TrainingInterrupted:
        sys.exit("interrupted: Caffe saved a snapshot; run the same command again to resume")


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.caffe_runner",
        description="Run `caffe train` with a log, a progress bar and automatic resume from the newest snapshot.",
    )
    ap.add_argument("solver", help="solver.prototxt")
    ap.add_argument("--log", required=True, help="log file to write (appended to when resuming)")
    ap.add_argument("--weights", help="initial weights (.caffemodel) for fine-tuning")
    ap.add_argument("--gpu", default=None, help="GPU id(s), e.g. 0 or 0,1 (needs a CUDA build)")
    ap.add_argument("--no-resume", action="store_true", help="start from scratch even if snapshots exist")
    ap.add_argument("--cwd", default=str(paths.REPO), help="folder the prototxt paths are relative to")
    a = ap.parse_args(argv)
    with cli_errors(FileNotFoundError, ValueError):
        r = train(a.solver, a.log, weights=a.weights, gpu=a.gpu, resume=not a.no_resume, cwd=a.cwd)
    print(f"done: iterations {r.start_iter}..{r.final_iter}, {r.seconds:.1f} s, log {r.log}")


if __name__ == "__main__":
    main()
