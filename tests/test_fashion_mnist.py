"""Fashion-MNIST without its Debian package: FASHION_MNIST_DIR, data/fashion-mnist/, the download and its mirror.

The files are real-format stand-ins (tests/real_formats/fashion_mnist.py: gzipped IDX at the real counts and
28x28), served from 127.0.0.1. Every test points the Debian package's folder somewhere of its own, so it
runs the same whether dataset-fashion-mnist is installed or not.
"""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from http_fixtures import Body, FileServer, Status
from real_formats import fashion_mnist as fm

from tools import datasets, doctor, paths
from tools.datasets import DatasetError, fashion_mnist_source, load_fashion_mnist

HTML = b"<!DOCTYPE html><html><body>Access denied: please log in</body></html>\n"


@pytest.fixture(scope="module")
def files():
    return fm.published()


@pytest.fixture(scope="module")
def expected():
    return fm.arrays()


@pytest.fixture
def nowhere(tmp_path, monkeypatch, files):
    """No FASHION_MNIST_DIR, an empty Debian folder, the clone's data/ under tmp_path; the published md5s are those
    of the stand-ins. Returns the download folder, data/fashion-mnist/."""
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.delenv("FASHION_MNIST_URL", raising=False)
    (tmp_path / "debian").mkdir()
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    monkeypatch.setattr(datasets, "FASHION_MNIST_MD5", {n: hashlib.md5(d).hexdigest() for n, d in files.items()})
    return tmp_path / "data" / "fashion-mnist"


@pytest.fixture
def mirror(files, monkeypatch):
    """The four files on a server at 127.0.0.1, which FASHION_MNIST_URL names."""
    with FileServer() as server:
        for name, data in files.items():
            server.add(f"/fashion/{name}", data)
        monkeypatch.setenv("FASHION_MNIST_URL", server.url("/fashion/"))
        yield server


def requested(server, name) -> int:
    return len(server.requests(f"/fashion/{name}"))


def assert_is(ds, expected):
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.test_images.shape == (10000, 1, 28, 28)
    assert ds.train_labels.dtype == np.int64 and ds.classes == datasets.FASHION_MNIST_CLASSES
    assert np.array_equal(ds.train_images[:, 0], expected["train-images-idx3-ubyte.gz"])
    assert np.array_equal(ds.train_labels, expected["train-labels-idx1-ubyte.gz"])
    assert np.array_equal(ds.test_images[:, 0], expected["t10k-images-idx3-ubyte.gz"])
    assert np.array_equal(ds.test_labels, expected["t10k-labels-idx1-ubyte.gz"])


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def test_published_checksums_and_location_are_zalandos():
    # the table "Get the Data" of https://github.com/zalandoresearch/fashion-mnist (README.md)
    assert datasets.FASHION_MNIST_URL == "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    assert datasets.FASHION_MNIST_MD5 == {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}


def test_downloads_into_the_clone_when_no_copy_is_here(nowhere, mirror, files, expected, capsys):
    """A 503 with Retry-After is waited out; an HTML page served with 200 fails its md5 and is kept aside; the next
    run fetches only what is still missing, and a third fetches nothing."""
    mirror.set_faults("/fashion/train-images-idx3-ubyte.gz", [Status(503, headers={"Retry-After": "1"})])
    mirror.set_faults("/fashion/t10k-labels-idx1-ubyte.gz", [Body(HTML)])
    assert fashion_mnist_source().folder == nowhere and fashion_mnist_source().download
    with pytest.raises(DatasetError) as e:
        load_fashion_mnist()
    message = one_line_error(e)
    assert "t10k-labels-idx1-ubyte.gz" in message and "checksum mismatch" in message
    assert f"kept as {nowhere / 't10k-labels-idx1-ubyte.gz.mismatch'}" in message
    assert (nowhere / "t10k-labels-idx1-ubyte.gz.mismatch").read_bytes() == HTML  # kept, never deleted
    assert requested(mirror, "train-images-idx3-ubyte.gz") == 2  # the 503, then the file

    assert_is(load_fashion_mnist(), expected)
    assert [requested(mirror, n) for n in fm.NAMES] == [2, 1, 1, 2]
    for name in fm.NAMES:
        assert (nowhere / name).read_bytes() == files[name]
    assert not list(nowhere.glob("*.part"))
    assert_is(load_fashion_mnist(), expected)
    assert [requested(mirror, n) for n in fm.NAMES] == [2, 1, 1, 2]
    assert "downloading" in capsys.readouterr().err


def test_a_file_in_the_download_folder_that_is_not_fashion_mnist_is_moved_aside_and_fetched(nowhere, mirror, files,
                                                                                          expected, capsys):
    """A copy that reads as Fashion-MNIST stays (Debian's own .gz files have other md5s than Zalando's); one that does
    not is moved to <name>.mismatch, never deleted, and the published file is downloaded."""
    recompressed = fm.gz(fm.idx(expected["train-images-idx3-ubyte.gz"]), level=9)  # like Debian's: other md5
    assert recompressed != files["train-images-idx3-ubyte.gz"]
    cut_off = files["train-labels-idx1-ubyte.gz"][:100]
    fm.write(nowhere, {"train-images-idx3-ubyte.gz": recompressed, "train-labels-idx1-ubyte.gz": cut_off,
                       "t10k-images-idx3-ubyte.gz": HTML,
                       "t10k-labels-idx1-ubyte.gz": files["t10k-labels-idx1-ubyte.gz"]})
    assert_is(load_fashion_mnist(), expected)
    assert [requested(mirror, n) for n in fm.NAMES] == [0, 1, 1, 0]
    assert (nowhere / "train-images-idx3-ubyte.gz").read_bytes() == recompressed
    assert (nowhere / "train-labels-idx1-ubyte.gz.mismatch").read_bytes() == cut_off
    assert (nowhere / "t10k-images-idx3-ubyte.gz.mismatch").read_bytes() == HTML
    err = capsys.readouterr().err
    assert f"moved it to {nowhere / 'train-labels-idx1-ubyte.gz.mismatch'}" in err
    assert "not a readable gzip file" in err


def test_a_complete_clone_folder_is_used_without_a_request(nowhere, mirror, files, expected):
    fm.write(nowhere, files)
    assert_is(load_fashion_mnist(), expected)
    assert mirror.requests() == []


def test_no_copy_and_no_download_says_every_way_to_get_it(nowhere, monkeypatch):
    with FileServer() as server:  # knows no files: 404 for each
        monkeypatch.setenv("FASHION_MNIST_URL", server.url("/gone"))
        with pytest.raises(DatasetError) as e:
            load_fashion_mnist()
    message = one_line_error(e)
    for part in (f"{nowhere / 'train-images-idx3-ubyte.gz'} is not here", "HTTP 404 for http://127.0.0.1",
                 "/gone/train-images-idx3-ubyte.gz", "set FASHION_MNIST_URL to a mirror",
                 "set FASHION_MNIST_DIR to a folder holding the four files", "apt-get install dataset-fashion-mnist"):
        assert part in message, part
    assert not nowhere.exists() or not list(nowhere.iterdir())


def test_no_download_never_downloads(nowhere, mirror):
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz not found .*Fix: run .* -m tools.datasets"):
        load_fashion_mnist(download=False)
    assert mirror.requests() == []


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_FASHION_MNIST_DIR_is_read_where_it_is_and_never_written(nowhere, tmp_path, monkeypatch, files, expected):
    """Used as is, before the Debian package and the clone; gunzipped files count too."""
    own = fm.write(tmp_path / "own", files)
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (own / name).unlink()
        (own / name.removesuffix(".gz")).write_bytes(fm.idx(expected[name]))
    fm.write(datasets.DEBIAN_FASHION_MNIST, files)  # present, but FASHION_MNIST_DIR comes first
    before = snapshot(own)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(own))
    monkeypatch.setenv("FASHION_MNIST_URL", "http://127.0.0.1:9/never-asked/")
    assert fashion_mnist_source().folder == own
    assert_is(load_fashion_mnist(), expected)
    assert snapshot(own) == before and not nowhere.exists()


def test_search_order(nowhere, tmp_path, monkeypatch, files):
    debian = datasets.DEBIAN_FASHION_MNIST
    fm.write(nowhere, files)
    fm.write(debian, {n: files[n] for n in fm.NAMES[:3]})  # an incomplete Debian folder is passed over
    assert fashion_mnist_source().folder == nowhere
    fm.write(debian, files)
    source = fashion_mnist_source()
    assert source.folder == debian and not source.download and "Debian package" in source.what
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "own"))
    assert fashion_mnist_source().folder == tmp_path / "own"


def broken(files, expected, what):
    """The four files with one of them broken as `what` says: (name of that file, the files)."""
    files = dict(files)
    if what == "missing":
        del files["t10k-labels-idx1-ubyte.gz"]
        return "t10k-labels-idx1-ubyte.gz", files
    if what == "cut off":
        name, data = "train-images-idx3-ubyte.gz", files["train-images-idx3-ubyte.gz"][:50_000]
    elif what == "html":
        name, data = "train-labels-idx1-ubyte.gz", HTML
    elif what == "labels for images":
        name, data = "t10k-images-idx3-ubyte.gz", files["t10k-labels-idx1-ubyte.gz"]
    elif what == "too few":
        name, data = "train-images-idx3-ubyte.gz", fm.gz(fm.idx(expected["train-images-idx3-ubyte.gz"][:59999]))
    elif what == "other size":
        name, data = "t10k-images-idx3-ubyte.gz", fm.gz(fm.idx(expected["t10k-images-idx3-ubyte.gz"][:, :, :27]))
    elif what == "label 10":
        labels = expected["t10k-labels-idx1-ubyte.gz"].copy()
        labels[7] = 10
        name, data = "t10k-labels-idx1-ubyte.gz", fm.gz(fm.idx(labels))
    elif what == "short body":
        name, data = "train-labels-idx1-ubyte.gz", fm.gz(fm.idx(expected["train-labels-idx1-ubyte.gz"])[:-5])
    files[name] = data
    return name, files


BROKEN = {
    "missing": r"t10k-labels-idx1-ubyte.gz not found \(FASHION_MNIST_DIR=.*\)",
    "cut off": r"train-images-idx3-ubyte.gz is not a readable gzip file",
    "html": r"train-labels-idx1-ubyte.gz is not a readable gzip file",
    "labels for images": r"t10k-images-idx3-ubyte.gz: magic number 0x00000801 \(1 dimensions\), expected 0x00000803",
    "too few": r"train-images-idx3-ubyte.gz: holds 59999 images, expected 60000",
    "other size": r"t10k-images-idx3-ubyte.gz: images of 28x27, expected 28x28",
    "label 10": r"t10k-labels-idx1-ubyte.gz: label 10 at entry 7 \(1 out of range\), expected 0-9",
    "short body": r"train-labels-idx1-ubyte.gz: header says \(60000,\) but holds 59995 bytes",
}


@pytest.mark.parametrize("what", BROKEN)
def test_FASHION_MNIST_DIR_with_a_broken_file_is_one_line_naming_the_file_and_the_fix(nowhere, tmp_path, monkeypatch,
                                                                                      files, expected, what):
    name, copy = broken(files, expected, what)
    own = fm.write(tmp_path / "own", copy)
    before = snapshot(own)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(own))
    with pytest.raises(DatasetError, match=BROKEN[what]) as e:
        load_fashion_mnist()
    message = one_line_error(e)
    assert str(own / name) in message
    assert ". Fix: put Fashion-MNIST's four files there" in message and "unset FASHION_MNIST_DIR" in message
    assert snapshot(own) == before  # the user's folder: nothing moved, nothing added


def test_datasets_command_says_where_from_and_fails_in_one_line(tmp_path, files, expected):
    """FASHION_MNIST_DIR comes first, so this holds with or without the Debian package."""
    own = fm.write(tmp_path / "own", files)
    env = {**os.environ, "FASHION_MNIST_DIR": str(own)}
    ok = subprocess.run([sys.executable, "-m", "tools.datasets", "--no-download"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"Fashion-MNIST: 60000 training and 10000 test images from FASHION_MNIST_DIR={own}: {own}\n"
    name, copy = broken(files, expected, "label 10")
    fm.write(own, copy)
    bad = subprocess.run([sys.executable, "-m", "tools.datasets"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith(f"error: {own / name}: label 10"), bad.stderr


def test_doctor_says_which_copy_and_how_to_get_one(nowhere, mirror, tmp_path, monkeypatch, files, expected, capsys):
    assert doctor.fashion_mnist(".venv/bin/python")  # nothing here yet: listed, not a failure
    out = capsys.readouterr().out
    assert "[--  ] Fashion-MNIST" in out and f"downloaded into {nowhere}/ on first use" in out
    assert "fix: .venv/bin/python -m tools.datasets downloads it now; or set FASHION_MNIST_DIR" in out
    assert mirror.requests() == []  # the doctor only looks

    fm.write(nowhere, files)
    assert doctor.fashion_mnist(".venv/bin/python")
    assert f"[ok  ] Fashion-MNIST          {nowhere} (" in capsys.readouterr().out

    name, copy = broken(files, expected, "too few")
    own = fm.write(tmp_path / "own", copy)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(own))
    assert not doctor.fashion_mnist(".venv/bin/python")
    out = capsys.readouterr().out
    assert f"[FAIL] Fashion-MNIST          {own / name}: holds 59999 images" in out
    assert "fix: put Fashion-MNIST's four files there" in out
