"""Caffe training logs as tables (Caffe's own tools/extra/parse_log.py is Python 2 only).

    log = parse_log("results/q1/.../train.log")
    log.train                 # [{'NumIters': 0, 'Seconds': 0.0, 'LearningRate': 0.01, 'loss': 2.3}, ...]
    log.tests[0], log.tests[1]  # one table per test net, same columns
    write_csvs(log, "results/q1/...", "train.log")   # train.log.train, train.log.test, train.log.test1

Columns follow Caffe's parse_log.py (NumIters, Seconds, LearningRate, then the net outputs), and the
files are named like its output, so existing plotting habits carry over. Seconds count training time
since the first line; when a run was resumed (the log holds several runs), the pause between runs is
left out and rows the resumed run repeats replace the earlier ones, so no iteration appears twice; its
clock goes back to the time the earlier run reached the snapshot it resumed from, so the time of work that
was thrown away (after that snapshot, or a whole run retrained after its snapshot was found broken) does
not count either.
A run starts at the runner's `# toolkit:` line (found even where a killed run left its last line cut
off, and that cut-off line is dropped) or, in logs of bare `caffe train` runs appended together, at
Caffe's own `Solving` line. A last line without its newline is still being written, or was cut: it
is left out too.
"""

import argparse
import csv
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tools.cli import exit_on
from tools.errors import ToolkitError
from tools.fileio import atomic_path

# glog prefixes each line with severity, [year,] month, day and time: "I1128 20:35:09.43" (older glog) or
# "I20261128 20:35:09.43" (glog 0.6, as on Debian bookworm).
GLOG_TIME = re.compile(r"^[IWEF](\d{4})?(\d\d)(\d\d) (\d\d):(\d\d):(\d\d(?:\.\d+)?)")
ITERATION = re.compile(r"Iteration (\d+)")
LEARNING_RATE = re.compile(r"Iteration (\d+), lr = ([-+]?[\d.]+(?:[eE][-+]?\d+)?)")
TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
OUTPUT = re.compile(r"(Train|Test) net output #(\d+): (\S+) = ([-+]?(?:[\d.]+(?:[eE][-+]?\d+)?|nan|inf))")
RUN_START = "# toolkit:"  # the runner writes this line before each caffe run it appends to a log
SOLVING = re.compile(r"\] Solving ")  # Caffe prints it once per `caffe train`, before iteration 0 or the resume point

BASE_COLUMNS = ["NumIters", "Seconds", "LearningRate"]


class LogError(ToolkitError):
    """The log given is not one a `caffe train` wrote (missing, a folder, or no outputs in it)."""


@dataclass
class Log:
    train: list = field(default_factory=list)
    tests: list = field(default_factory=list)  # tests[k]: rows of test net #k

    def test(self, k=0):
        return self.tests[k] if k < len(self.tests) else []

    def column(self, table, name):
        return [row[name] for row in table if name in row]


class _Clock:
    """Seconds of training time: glog timestamps summed, without the gaps between runs."""

    def __init__(self):
        self.prev, self.elapsed, self.year = None, 0.0, 2000

    def new_run(self):
        self.prev = None

    def tick(self, line) -> float:
        m = GLOG_TIME.match(line)
        if not m:
            return self.elapsed
        year, (month, day, hh, mm), sec = m.group(1), (int(g) for g in m.groups()[1:5]), float(m.group(6))
        if year:
            self.year = int(year)
        t = datetime(self.year, month, day, hh, mm).timestamp() + sec
        if not year and self.prev is not None and t < self.prev - 86400 * 180:  # no year: new year's eve
            self.year += 1
            t = datetime(self.year, month, day, hh, mm).timestamp() + sec
        if self.prev is not None:
            self.elapsed += max(0.0, t - self.prev)
        self.prev = t
        return self.elapsed


def parse_log(path) -> Log:
    text = Path(path).read_text(errors="replace")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()  # cut off mid-line (or still being written): its numbers may be cut short too
    return parse_lines(lines)


def parse_lines(lines) -> Log:
    log, clock = Log(), _Clock()
    lr_at, last_lr = {}, None  # learning rate printed for each iteration
    iteration, test_net, run = -1, 0, 0
    solving_seen = False  # a `Solving` line since the last run start
    table_run = {}  # id(table) -> the run its newest row came from
    run_began = None  # the clock when the latest run started, until its first iteration is seen

    def time_at(it) -> float:
        """When the earlier runs reached iteration `it` (the snapshot a run resumes from): the first row logged
        at `it`, else the last before it; 0 when they never got there."""
        tables = [log.train, *log.tests]
        at = [r["Seconds"] for t in tables for r in t if r["NumIters"] == it]
        before = [r["Seconds"] for t in tables for r in t if r["NumIters"] < it]
        return min(at) if at else max(before, default=0.0)

    def row_for(table, it, seconds):
        if table_run.get(id(table), run) != run:
            # The first row of a resumed run replaces what the interrupted run logged from there on.
            table[:] = [r for r in table if r["NumIters"] < it]
        table_run[id(table)] = run
        if table and table[-1]["NumIters"] == it:
            return table[-1]
        row = {"NumIters": it, "Seconds": round(seconds, 3), "LearningRate": lr_at.get(it, last_lr)}
        table.append(row)
        return row

    for line in lines:
        if RUN_START in line:
            # Not necessarily at the start of the line: a run killed mid-line leaves its last line without a
            # newline, and what precedes the marker is that incomplete line, which is dropped.
            clock.new_run()
            run += 1
            solving_seen = False
            run_began = clock.elapsed
            continue
        if SOLVING.search(line):
            if solving_seen:  # a second `caffe train` appended without the runner's marker
                clock.new_run()
                run += 1
                run_began = clock.elapsed
            solving_seen = True
            continue
        seconds = clock.tick(line)
        m = ITERATION.search(line)
        if m and run_began is not None:
            # the run's first iteration, where it resumed: its clock continues from when the earlier runs got
            # there, plus its own start-up
            clock.elapsed = seconds = time_at(int(m.group(1))) + (clock.elapsed - run_began)
            run_began = None
        m = LEARNING_RATE.search(line)
        if m:
            it, lr = int(m.group(1)), float(m.group(2))
            lr_at[it], last_lr = lr, lr
            for table in [log.train, *log.tests]:
                if table and table[-1]["NumIters"] == it:
                    table[-1]["LearningRate"] = lr
            continue
        m = TESTING.search(line)
        if m:
            iteration, test_net = int(m.group(1)), int(m.group(2))
            continue
        m = OUTPUT.search(line)
        if m:
            phase, name, value = m.group(1), m.group(3), float(m.group(4))
            if phase == "Train":
                table = log.train
            else:
                while len(log.tests) <= test_net:
                    log.tests.append([])
                table = log.tests[test_net]
            row_for(table, iteration, seconds)[name] = value
            continue
        m = ITERATION.search(line)
        if m:
            iteration = int(m.group(1))
    return log


def columns(table) -> list[str]:
    names = list(BASE_COLUMNS)
    for row in table:
        names += [k for k in row if k not in names]
    return names


def write_csv(table, path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns(table), restval="")
        w.writeheader()
        w.writerows(table)
    return Path(path)


def write_csvs(log: Log, out_dir, name) -> list[Path]:
    """`name.train`, `name.test` (test net #0), `name.test1`, ... as Caffe's parse_log.py names them."""
    out_dir = Path(out_dir)
    written = [write_csv(log.train, out_dir / f"{name}.train")]
    for k, table in enumerate(log.tests):
        written.append(write_csv(table, out_dir / f"{name}.test{k if k else ''}"))
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.parse_log",
        description="Parse a Caffe training log into CSV tables: LOG.train, LOG.test (and LOG.test1, ... "
        "for further test nets), with the columns of Caffe's parse_log.py.",
    )
    ap.add_argument("log", help="a log written by `caffe train`")
    ap.add_argument("out_dir", nargs="?", help="folder for the CSV files (default: beside the log)")
    a = ap.parse_args(argv)
    log_path = Path(a.log)
    with exit_on():  # a folder given as the log, an unreadable one, an output folder that cannot be written: one line
        if not log_path.exists():
            raise LogError(f"no such log: {log_path}. Fix: give the path of a log `caffe train` wrote")
        if log_path.is_dir():
            raise LogError(f"{log_path} is a folder. Fix: give the log file a `caffe train` wrote (e.g. "
                           f"{log_path / 'train.log'})")
        log = parse_log(log_path)
        if not log.train and not log.tests:
            raise LogError(f"{log_path} holds no 'Train net output' or 'Test net output' lines. Fix: give the log "
                           "a `caffe train` wrote")
        written = write_csvs(log, a.out_dir or log_path.parent, log_path.name)
    for p in written:
        print(p)


if __name__ == "__main__":
    main()
