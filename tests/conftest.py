"""Shared fixtures: small real data (Fashion-MNIST from its Debian package) and tiny nets.

A run of the whole suite (`make test`, or `make test-fast`'s -m "not slow") records its wall time, its
counts and the machine's load in results/tests/ (make-test.json, make-test-fast.json), from which
`make readme` publishes the README's times; runs of a part of the suite record nothing.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GLOG_minloglevel", "2")  # keep pycaffe's net set-up chatter out of test output


@pytest.fixture(scope="session")
def fashion():
    from tools.datasets import load_fashion_mnist

    return load_fashion_mnist()


@pytest.fixture(scope="session")
def small_lmdb(tmp_path_factory, fashion):
    """600 training and 200 test images of Fashion-MNIST as LMDBs (60/20 per class)."""
    from tools.datasets import stratified_subset
    from tools.lmdb_io import write_arrays

    root = tmp_path_factory.mktemp("fmnist")
    tr = stratified_subset(fashion.train_labels, 60, seed=1)
    te = stratified_subset(fashion.test_labels, 20, seed=1)
    write_arrays(root / "train_lmdb", fashion.train_images[tr], fashion.train_labels[tr])
    write_arrays(root / "test_lmdb", fashion.test_images[te], fashion.test_labels[te])
    return root


def write_prototxt(path, net_param) -> Path:
    path = Path(path)
    path.write_text(str(net_param))
    return path


@pytest.fixture
def rng():
    return np.random.RandomState(0)


# ---- the record of a whole run (results/tests/), for the README's times -------------------------------------

RUN_RECORDS = {"": "make-test.json", "not slow": "make-test-fast.json"}  # -m expression -> record
COUNTED = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "deselected")
RUN_START = pytest.StashKey[tuple]()


def pytest_sessionstart(session):
    from tools import runinfo

    session.config.stash[RUN_START] = (time.time(), runinfo.machine())


def run_record_name(config) -> str | None:
    """The record a run writes: only a run of the whole tests/ folder, by no keyword, with no -m or "not slow"."""
    whole = [Path(a).resolve() for a in config.args] in ([REPO / "tests"], [])
    o = config.option
    if not whole or o.keyword or o.lf or o.failedfirst or o.maxfail or o.collectonly:
        return None
    return RUN_RECORDS.get((config.option.markexpr or "").strip())


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    name = run_record_name(config)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if name is None or reporter is None or RUN_START not in config.stash or exitstatus not in (0, 1):
        return
    from tools import runinfo
    from tools.fileio import write_text

    start, machine = config.stash[RUN_START]
    counts = {k: len(reporter.stats.get(k, [])) for k in COUNTED}
    record = {"command": "make test" if name == "make-test.json" else "make test-fast",
              "markexpr": config.option.markexpr or "", "seconds": round(time.time() - start, 1),
              "machine": machine, "loadavg_end": runinfo.loadavg(), "exitstatus": int(exitstatus), **counts}
    write_text(REPO / "results" / "tests" / name, json.dumps(record, indent=1) + "\n")


@pytest.fixture(scope="module")
def q1_first_run(tmp_path_factory):
    """A tiny Q1 run (2 images per class, 4 iterations, baseline) in its own repository folder: (repo, out).
    One per test module: the fault tests damage its files."""
    from q1_dropout_augment import experiment

    repo = tmp_path_factory.mktemp("q1run")
    out = experiment.run("fashion-mnist", per_class=2, seed=0, variants=["baseline"], max_iter=4, repo=repo,
                         progress=False)
    return repo, out
