"""Q1's data: CIFAR-10 (downloaded) or Fashion-MNIST (tools.datasets: yours, Debian's or downloaded) as LMDBs.

    .venv/bin/python -m q1_dropout_augment.data --dataset fashion-mnist --per-class 100 --seed 0
    .venv/bin/python -m q1_dropout_augment.data --archive ~/cifar-10-python.tar.gz    # a CIFAR-10 archive you have

writes data/q1/<dataset>/: train_lmdb (all training images), val_lmdb (the test set, used for
validation), val_sample_lmdb (a seeded, class-stratified sample of it: the validation curve),
train_subset_lmdb (a seeded, class-stratified subset, in seeded random order),
train_subset_mean.binaryproto (+ .npy), classes.txt and prepared.json (what was prepared, with which
options and, for CIFAR-10, which archive). A rerun with the same options and archive does nothing once
it has checked the data: each LMDB against its manifest (entry count, size and SHA-256 of data.mdb,
labels, the options it was made with) and the mean file by reading it; anything that fails the check
(a truncated or replaced LMDB) is prepared again. One preparation at a time per folder (tools.locks).

Without --archive, CIFAR-10 is data/cifar10/cifar-10-python.tar.gz, downloaded md5-checked. With
--archive the file is used where it is, only read: never downloaded, copied over, moved or deleted,
and checked by reading it (no checksum: it may be any valid copy).
"""

import argparse
import json
import os
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a program: quiet pycaffe's set-up log; glog reads this when caffe loads
    os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np

from tools import lmdb_io, locks, paths
from tools.cli import exit_on
from tools.datasets import DATASETS, DatasetError, load_cifar10, load_fashion_mnist, stratified_subset
from tools.fileio import read_json, write_text

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
OWN_ARCHIVE_HINT = ("to use a cifar-10-python.tar.gz you already have: make q1 DATASET=cifar10 CIFAR10_ARCHIVE=PATH "
                    "(.venv/bin/python -m q1_dropout_augment.experiment --archive PATH)")


def cifar10_archive(repo=paths.REPO) -> Path:
    return Path(repo) / "data" / "cifar10" / "cifar-10-python.tar.gz"


def fetch_cifar10(repo=paths.REPO) -> Path:
    """The CIFAR-10 archive, downloaded (md5-checked, resumable) unless already there."""
    from tools.download import download

    url = os.environ.get("CIFAR10_URL", CIFAR10_URL)
    return download(url, cifar10_archive(repo), md5=CIFAR10_MD5, desc="cifar-10-python.tar.gz", url_env="CIFAR10_URL",
                    own_file_hint=OWN_ARCHIVE_HINT)


def resolve(requested: str | None, repo=paths.REPO, archive=None) -> str:
    """The dataset to use. Unset/"auto" means CIFAR-10 when it is here or can be downloaded, else
    Fashion-MNIST (real data, offline from its Debian package or FASHION_MNIST_DIR); an explicit choice is kept.
    A user's `archive` means CIFAR-10, taken from there and never downloaded."""
    if requested not in (None, "", "auto") and requested not in DATASETS:
        raise DatasetError(f"unknown dataset '{requested}': choose one of {', '.join(DATASETS)}")
    if archive is not None:
        if requested == "fashion-mnist":
            raise DatasetError(f"--archive {archive} is a CIFAR-10 archive, but --dataset is fashion-mnist: "
                               "drop --archive (CIFAR10_ARCHIVE) or use --dataset cifar10")
        archive_identity(archive)  # says so now if the file is not there
        return "cifar10"
    if requested not in (None, "", "auto"):
        if requested == "cifar10":
            fetch_cifar10(repo)
        return requested
    if cifar10_archive(repo).exists():
        return "cifar10"
    from tools.datasets import fashion_mnist_source
    from tools.download import DownloadError

    try:
        fetch_cifar10(repo)
        return "cifar10"
    except DownloadError as e:
        print(f"[q1] CIFAR-10 is not here and could not be downloaded ({e}).\n"
              "[q1] Using Fashion-MNIST instead: real 28x28 images of 10 clothing classes, from "
              f"{fashion_mnist_source().what}. Every output names the dataset.",
              file=sys.stderr)
        if OWN_ARCHIVE_HINT not in str(e):
            print(f"[q1] {OWN_ARCHIVE_HINT[0].upper()}{OWN_ARCHIVE_HINT[1:]}.", file=sys.stderr)
        return "fashion-mnist"


def archive_identity(archive) -> dict:
    """Which archive, as recorded in prepared.json: another file, or this one changed, prepares again."""
    path = Path(archive).expanduser().resolve()
    fix = ("pass the path of a cifar-10-python.tar.gz with --archive PATH (make q1 CIFAR10_ARCHIVE=PATH), "
           "or leave it out to download it")
    try:
        st = path.stat()
    except OSError as e:
        raise DatasetError(f"{archive}: {e.strerror}: {fix}") from None
    if not path.is_file():
        raise DatasetError(f"{archive} is not a file: {fix}")
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def load(name: str, repo=paths.REPO, archive=None):
    if name == "fashion-mnist":
        return load_fashion_mnist()
    if name == "cifar10":
        return load_cifar10(archive if archive is not None else cifar10_archive(repo))
    raise DatasetError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")


LMDB_COUNTS = {"train_lmdb": "train_count", "val_lmdb": "val_count", "train_subset_lmdb": "subset_count",
               "val_sample_lmdb": "val_sample_count"}
# The validation curve is measured on a fixed, class-stratified sample of the validation set (cheap
# enough to test every few iterations); the final numbers on all of it (q1_dropout_augment.experiment).
VAL_SAMPLE_PER_CLASS = 100


# What prepared.json always holds (besides the options it was prepared with, compared field by field)
PREPARED = {"image_shape": list, "train_count": int, "val_count": int, "subset_count": int, "val_sample_count": int,
            "classes": list, "subset_class_counts": list}


def check_prepared(folder: Path, info: dict, options: dict) -> str | None:
    """None if the prepared data is what prepared.json says, else what is wrong (one phrase)."""
    try:
        for name, key in LMDB_COUNTS.items():
            lmdb_io.check(folder / name, entries=info.get(key), source=options, num_classes=len(info["classes"]))
        lmdb_io.read_mean(folder / "train_subset_mean.binaryproto")
        lmdb_io.read_mean(folder / "train_subset_mean.npy")
    except (ValueError, FileNotFoundError, KeyError) as e:
        return str(e).split(". Fix:")[0]
    return None


def prepare(name: str, per_class: int = 100, seed: int = 0, repo=paths.REPO, log=print, archive=None) -> dict:
    """Write the LMDBs and the subset's mean under repo/data/q1/<name>/; skip when already prepared alike
    and the data passes its checks.

    CIFAR-10 comes from `archive` when given, else from the downloaded data/cifar10/ archive."""
    if per_class < 1:
        raise DatasetError(f"--per-class must be at least 1, not {per_class}")
    folder = Path(repo) / "data" / "q1" / name
    options = {"dataset": name, "per_class": per_class, "seed": seed, "val_sample_per_class": VAL_SAMPLE_PER_CLASS}
    if name == "cifar10":
        options["archive"] = archive_identity(archive if archive is not None else cifar10_archive(repo))
        archive = options["archive"]["path"]
    marker = folder / "prepared.json"
    with locks.locked(folder, what=f"the data folder {folder}"):
        # a damaged prepared.json is moved aside and the data prepared again
        done = read_json(marker, log=lambda line: log(f"[q1] {line}"), expect=PREPARED,
                         again=f"preparing {name} again")
        if done is not None and {k: done.get(k) for k in options} == options:
            problem = check_prepared(folder, done, options)
            if problem is None:
                return done
            log(f"[q1] {problem}: preparing {name} again")
        return _write_prepared(name, per_class, seed, repo, log, archive, folder, options)


def _write_prepared(name, per_class, seed, repo, log, archive, folder, options) -> dict:
    marker = folder / "prepared.json"
    ds = load(name, repo, archive)
    subset = stratified_subset(ds.train_labels, per_class, seed)  # checks per_class against the data
    source = f" from {options['archive']['path']}" if "archive" in options else ""
    log(f"[q1] {name}{source}: writing LMDBs under {folder} ({len(ds.train_labels)} train, {len(ds.test_labels)} val, "
        f"subset {len(subset)} = {per_class}/class, seed {seed})")
    marker.unlink(missing_ok=True)  # from here on the folder is being rewritten
    k = len(ds.classes)
    lmdb_io.write_arrays(folder / "train_lmdb", ds.train_images, ds.train_labels, num_classes=k, source=options)
    lmdb_io.write_arrays(folder / "val_lmdb", ds.test_images, ds.test_labels, num_classes=k, source=options)
    lmdb_io.write_arrays(folder / "train_subset_lmdb", ds.train_images[subset], ds.train_labels[subset],
                         num_classes=k, source=options)
    sample = stratified_subset(ds.test_labels, min(VAL_SAMPLE_PER_CLASS, int(np.bincount(ds.test_labels).min())), seed)
    lmdb_io.write_arrays(folder / "val_sample_lmdb", ds.test_images[sample], ds.test_labels[sample],
                         num_classes=k, source=options)
    lmdb_io.compute_mean(folder / "train_subset_lmdb", folder / "train_subset_mean.binaryproto")
    write_text(folder / "classes.txt", "\n".join(ds.classes) + "\n")
    info = {**options, "image_shape": list(ds.shape), "train_count": int(len(ds.train_labels)),
            "val_count": int(len(ds.test_labels)), "subset_count": int(len(subset)),
            "val_sample_count": int(len(sample)), "classes": ds.classes,
            "subset_class_counts": np.bincount(ds.train_labels[subset]).tolist()}
    write_text(marker, json.dumps(info, indent=1) + "\n")
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m q1_dropout_augment.data", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="auto", help="cifar10, fashion-mnist or auto (CIFAR-10 if obtainable)")
    ap.add_argument("--per-class", type=int, default=100, help="training subset: images per class (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subset choice (default 0)")
    ap.add_argument("--archive", metavar="PATH",
                    help="a cifar-10-python.tar.gz you have, used where it is (implies --dataset cifar10)")
    a = ap.parse_args(argv)
    from tools.download import DownloadError

    with exit_on(DatasetError, DownloadError, lmdb_io.LmdbError):
        name = resolve(a.dataset, archive=a.archive)
        print(json.dumps(prepare(name, a.per_class, a.seed, archive=a.archive), indent=1))


if __name__ == "__main__":
    main()
