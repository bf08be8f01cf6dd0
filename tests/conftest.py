"""Shared fixtures: small real data (Fashion-MNIST from its Debian package) and tiny nets."""

import os
import sys
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
