"""Q1's data: CIFAR-10 (downloaded) or Fashion-MNIST (Debian package) as LMDBs for Caffe.

    python -m q1_dropout_augment.data --dataset fashion-mnist --per-class 100 --seed 0

writes data/q1/<dataset>/: train_lmdb (all training images), val_lmdb (the test set, used for
validation), train_subset_lmdb (a seeded, class-stratified subset, in seeded random order),
train_subset_mean.binaryproto (+ .npy), classes.txt and prepared.json (what was prepared, with which
options; a rerun with the same options does nothing).
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from tools import lmdb_io, paths
from tools.datasets import DATASETS, DatasetError, load_cifar10, load_fashion_mnist, stratified_subset
from tools.fileio import write_text

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


def cifar10_archive(repo=paths.REPO) -> Path:
    return Path(repo) / "data" / "cifar10" / "cifar-10-python.tar.gz"


def fetch_cifar10(repo=paths.REPO) -> Path:
    """The CIFAR-10 archive, downloaded (md5-checked, resumable) unless already there."""
    from tools.download import download

    url = os.environ.get("CIFAR10_URL", CIFAR10_URL)
    return download(url, cifar10_archive(repo), md5=CIFAR10_MD5, desc="cifar-10-python.tar.gz", url_env="CIFAR10_URL")


def resolve(requested: str | None, repo=paths.REPO) -> str:
    """The dataset to use. Unset/"auto" means CIFAR-10 when it is here or can be downloaded, else
    Fashion-MNIST (real data from a Debian package, the offline stand-in); an explicit choice is kept."""
    if requested not in (None, "", "auto"):
        if requested not in DATASETS:
            raise DatasetError(f"unknown dataset '{requested}': choose one of {', '.join(DATASETS)}")
        if requested == "cifar10":
            fetch_cifar10(repo)
        return requested
    if cifar10_archive(repo).exists():
        return "cifar10"
    from tools.download import DownloadError

    try:
        fetch_cifar10(repo)
        return "cifar10"
    except DownloadError as e:
        print(f"[q1] CIFAR-10 is not here and could not be downloaded ({e}).\n"
              "[q1] Using Fashion-MNIST instead: real 28x28 images of 10 clothing classes from the Debian "
              "package dataset-fashion-mnist, the offline stand-in. Every output names the dataset.",
              file=sys.stderr)
        return "fashion-mnist"


def load(name: str, repo=paths.REPO):
    if name == "fashion-mnist":
        return load_fashion_mnist()
    if name == "cifar10":
        return load_cifar10(cifar10_archive(repo))
    raise DatasetError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")


def prepare(name: str, per_class: int = 100, seed: int = 0, repo=paths.REPO, log=print) -> dict:
    """Write the LMDBs and the subset's mean under repo/data/q1/<name>/; skip when already prepared alike."""
    folder = Path(repo) / "data" / "q1" / name
    options = {"dataset": name, "per_class": per_class, "seed": seed}
    marker = folder / "prepared.json"
    if marker.exists():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in options} == options:
            return done
    if per_class < 1:
        raise DatasetError(f"--per-class must be at least 1, not {per_class}")
    ds = load(name, repo)
    subset = stratified_subset(ds.train_labels, per_class, seed)  # checks per_class against the data
    log(f"[q1] {name}: writing LMDBs under {folder} ({len(ds.train_labels)} train, {len(ds.test_labels)} val, "
        f"subset {len(subset)} = {per_class}/class, seed {seed})")
    marker.unlink(missing_ok=True)  # from here on the folder is being rewritten
    lmdb_io.write_arrays(folder / "train_lmdb", ds.train_images, ds.train_labels)
    lmdb_io.write_arrays(folder / "val_lmdb", ds.test_images, ds.test_labels)
    lmdb_io.write_arrays(folder / "train_subset_lmdb", ds.train_images[subset], ds.train_labels[subset])
    lmdb_io.compute_mean(folder / "train_subset_lmdb", folder / "train_subset_mean.binaryproto")
    write_text(folder / "classes.txt", "\n".join(ds.classes) + "\n")
    info = {**options, "image_shape": list(ds.shape), "train_count": int(len(ds.train_labels)),
            "val_count": int(len(ds.test_labels)), "subset_count": int(len(subset)), "classes": ds.classes,
            "subset_class_counts": np.bincount(ds.train_labels[subset]).tolist()}
    write_text(marker, json.dumps(info, indent=1) + "\n")
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m q1_dropout_augment.data", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="auto", help="cifar10, fashion-mnist or auto (CIFAR-10 if obtainable)")
    ap.add_argument("--per-class", type=int, default=100, help="training subset: images per class (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subset choice (default 0)")
    a = ap.parse_args(argv)
    try:
        name = resolve(a.dataset)
        print(json.dumps(prepare(name, a.per_class, a.seed), indent=1))
    except DatasetError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
