"""Q1: the generated nets train with the real binary, augmentation is really applied, data preparation
is exact and seeded, bad input is refused before training, and the experiment writes its outputs."""

import dataclasses
import gzip
import io
import json
import pickle
import pickletools
import re
import shutil
import subprocess
import sys
import tarfile
import warnings

import caffe
import numpy as np
import pytest
from conftest import REPO
from real_formats import cifar10 as cifar10_format

from q1_dropout_augment import data, experiment, nets, warp_layer
from tools import caffe_runner, lmdb_io
from tools.datasets import DatasetError, load_cifar10, read_idx, stratified_subset
from tools.parse_log import parse_log

TINY = dataclasses.replace(nets.DATASETS["fashion-mnist"], train_count=100, val_count=200, max_iter=6,
                           test_interval=3, val_sample_count=100)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory, fashion):
    """A repo-shaped folder with small Fashion-MNIST LMDBs where the prototxts expect them."""
    repo = tmp_path_factory.mktemp("q1repo")
    root = repo / TINY.root
    tr = stratified_subset(fashion.train_labels, 10, seed=0)
    va = stratified_subset(fashion.test_labels, 20, seed=0)
    lmdb_io.write_arrays(root / "train_subset_lmdb", fashion.train_images[tr], fashion.train_labels[tr])
    lmdb_io.write_arrays(root / "val_lmdb", fashion.test_images[va], fashion.test_labels[va])
    lmdb_io.write_arrays(root / "val_sample_lmdb", fashion.test_images[va[:100]], fashion.test_labels[va[:100]])
    lmdb_io.compute_mean(root / "train_subset_lmdb", root / "train_subset_mean.binaryproto")
    return repo


@pytest.mark.slow
@pytest.mark.parametrize("variant", nets.VARIANTS)
def test_every_variant_trains_with_the_caffe_binary(tiny_repo, variant):
    folder = nets.write(TINY, variant, tiny_repo, f"models/{variant}")
    (tiny_repo / f"results/q1/fashion-mnist/{variant}").mkdir(parents=True, exist_ok=True)
    log = tiny_repo / f"runs/{variant}.log"
    caffe_runner.train(folder / "solver.prototxt", log, cwd=tiny_repo, progress=False)
    parsed = parse_log(log)
    assert [r["NumIters"] for r in parsed.test(0)] == [0, 3, 6]  # validation
    assert [r["NumIters"] for r in parsed.test(1)] == [0, 3, 6]  # training subset, the TEST way
    assert all({"accuracy", "loss"} <= r.keys() for r in parsed.test(0) + parsed.test(1))
    assert (tiny_repo / f"results/q1/fashion-mnist/{variant}/snap_iter_6.caffemodel").exists()
    if variant.endswith("_rta"):
        assert "RandomWarp" in log.read_text()


def test_committed_prototxts_equal_the_generators():
    for spec in nets.DATASETS.values():
        for variant in nets.VARIANTS:
            folder = nets.default_folder(spec, variant)
            for name, text in nets.files(spec, variant, folder).items():
                committed = REPO / folder / name
                assert committed.exists(), (
                    f"{committed} missing: run .venv/bin/python -m q1_dropout_augment.nets --write")
                assert committed.read_text() == text, f"{committed} differs from the generator's output"


def test_the_default_validation_curve_has_forty_points_on_a_sample_and_counts_every_image_once():
    for spec in nets.DATASETS.values():
        assert spec.max_iter // spec.test_interval + 1 >= 41 and spec.max_iter % spec.test_interval == 0
        solver = nets.solver(spec, "baseline", nets.default_folder(spec, "baseline"))
        assert list(solver.test_iter) == [spec.val_sample_count // nets.TEST_BATCH,
                                          spec.train_count // nets.TEST_BATCH]
        assert spec.val_sample_count % nets.TEST_BATCH == 0 == spec.train_count % nets.TEST_BATCH
        assert spec.val_count % nets.TEST_BATCH == 0  # the final pass over the whole validation set
    stages = [(layer.include[0].stage, layer.data_param.source.rsplit("/", 1)[1])
              for layer in nets.train_val(nets.DATASETS["fashion-mnist"], "baseline").layer if layer.type == "Data"]
    assert stages[1:] == [(["val"], "val_sample_lmdb"), (["train_subset"], "train_subset_lmdb"),
                          (["val_full"], "val_lmdb")]


def test_net_structure_and_deploy():
    net = nets.train_val(nets.DATASETS["fashion-mnist"], "dropout_augment")
    types = [(layer.name, layer.type) for layer in net.layer]
    assert [t for _, t in types].count("Data") == 4
    assert ("drop1", "Dropout") in types and ("loss", "SoftmaxWithLoss") in types
    conv = next(layer for layer in net.layer if layer.name == "conv1").convolution_param
    assert (conv.num_output, conv.kernel_size[0], conv.pad[0], conv.stride or [1]) == (32, 7, 3, [1])
    train, val, subset, _ = (layer for layer in net.layer if layer.type == "Data")
    assert train.transform_param.mirror and train.transform_param.crop_size == 26
    assert not val.transform_param.mirror and val.include[0].stage == ["val"]
    assert subset.include[0].stage == ["train_subset"] and subset.data_param.source.endswith("train_subset_lmdb")
    assert "Dropout" not in {layer.type for layer in nets.train_val(nets.DATASETS["cifar10"], "augment").layer}
    dep = nets.deploy(nets.DATASETS["cifar10"], "augment")
    assert list(dep.layer[0].input_param.shape[0].dim) == [1, 3, 28, 28] and dep.layer[-1].type == "Softmax"


def pycaffe_net(tmp_path, spec, variant, phase):
    path = tmp_path / f"{variant}-{phase}.prototxt"
    path.write_text(str(nets.train_val(spec, variant)))
    stages = [] if phase == "TRAIN" else ["val"]
    return caffe.Net(str(path), getattr(caffe, phase), stages=stages)


def test_augmentation_varies_in_train_and_is_the_centre_crop_in_test(tmp_path, monkeypatch, fashion):
    repo = tmp_path
    spec = dataclasses.replace(TINY)
    root = repo / spec.root
    image = fashion.train_images[7:8]
    for name in ("train_subset_lmdb", "val_lmdb", "val_sample_lmdb"):
        lmdb_io.write_arrays(root / name, np.repeat(image, 8, axis=0), [3] * 8)
    mean = np.random.RandomState(0).uniform(0, 255, (1, 28, 28)).astype(np.float32)
    lmdb_io.write_binaryproto(mean, root / "train_subset_mean.binaryproto")
    monkeypatch.chdir(repo)  # the prototxts name their data relative to the repo root
    train = pycaffe_net(tmp_path, spec, "augment", "TRAIN")
    seen = set()
    for _ in range(4):
        train.forward()
        seen.update(item.tobytes() for item in train.blobs["data"].data)
    assert len(seen) > 10, "mirror and random crops should give many different inputs"
    test = pycaffe_net(tmp_path, spec, "augment", "TEST")
    test.forward()
    off = (28 - 26) // 2
    expected = (image[0] - mean)[:, off:off + 26, off:off + 26] / 255
    for item in test.blobs["data"].data:
        np.testing.assert_allclose(item, expected, atol=1e-6)


def test_warp_layer_keeps_labels_and_shapes_and_changes_pixels(tmp_path, monkeypatch, fashion):
    spec = TINY
    root = tmp_path / spec.root
    idx = np.arange(50)
    lmdb_io.write_arrays(root / "train_subset_lmdb", fashion.train_images[idx], fashion.train_labels[idx])
    lmdb_io.write_arrays(root / "val_lmdb", fashion.train_images[idx], fashion.train_labels[idx])
    lmdb_io.write_arrays(root / "val_sample_lmdb", fashion.train_images[idx], fashion.train_labels[idx])
    lmdb_io.compute_mean(root / "train_subset_lmdb", root / "train_subset_mean.binaryproto")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    plain = pycaffe_net(tmp_path, spec, "dropout_augment", "TRAIN")
    warped = pycaffe_net(tmp_path, spec, "dropout_augment_rta", "TRAIN")
    caffe.set_random_seed(5)
    plain.forward()
    caffe.set_random_seed(5)  # same crops and mirrors: the only difference is the warp
    warped.forward()
    assert warped.blobs["data"].data.shape == plain.blobs["data"].data.shape == (50, 1, 26, 26)
    np.testing.assert_array_equal(warped.blobs["label"].data, fashion.train_labels[:50])
    diff = np.abs(warped.blobs["data"].data - plain.blobs["data"].data)
    assert (diff.reshape(50, -1).max(axis=1) > 0.05).all(), "every image is warped"


def test_warp_geometry_known_answers():
    rng = np.random.RandomState(0)
    identity = warp_layer.random_homographies(rng, 2, 9, 9)
    np.testing.assert_allclose(identity, np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)
    img = np.arange(2 * 81, dtype=np.float32).reshape(2, 1, 9, 9)
    np.testing.assert_allclose(warp_layer.warp(img, identity), img)
    # a pure 90-degree rotation about the centre moves the corners round
    angle = np.deg2rad(90)
    c = 4.0
    rot = np.array([[np.cos(angle), np.sin(angle), 0], [-np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    to_c, back = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1]]), np.array([[1, 0, c], [0, 1, c], [0, 0, 1]])
    turned = warp_layer.warp(img, np.stack([back @ rot @ to_c, identity[1]]))
    np.testing.assert_allclose(turned[0, 0], np.rot90(img[0, 0], k=-1), atol=1e-4)
    np.testing.assert_array_equal(turned[1], img[1])


def test_warps_drawn_for_a_batch_are_those_drawn_image_by_image():
    """The batch's draws come in the order each image would draw them with rng.uniform (rotation, scale, shear, two
    tilts), so a seed gives the same warps as drawing and composing them one image at a time."""
    params = dict(rotation=12, shear=0.12, scale=(0.9, 1.1), perspective=0.06)
    batch = warp_layer.random_homographies(np.random.RandomState(3), 4, 26, 20, **params)
    rng = np.random.RandomState(3)
    for got in batch:
        angle = np.deg2rad(rng.uniform(-12, 12))
        s, k = rng.uniform(0.9, 1.1), rng.uniform(-0.12, 0.12)
        tilt = rng.uniform(-0.06, 0.06, size=2) / np.array([20, 26])
        rot = np.array([[np.cos(angle), np.sin(angle), 0], [-np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        persp = np.eye(3)
        persp[2, :2] = tilt
        to_c = np.array([[1, 0, -9.5], [0, 1, -12.5], [0, 0, 1]])
        back = np.array([[1, 0, 9.5], [0, 1, 12.5], [0, 0, 1]])
        want = back @ persp @ np.diag([1 / s, 1 / s, 1]) @ np.array([[1, -k, 0], [0, 1, 0], [0, 0, 1]]) @ rot @ to_c
        np.testing.assert_array_equal(got, want)


def test_stratified_subset_counts_and_seed(fashion):
    a = stratified_subset(fashion.train_labels, 100, seed=3)
    b = stratified_subset(fashion.train_labels, 100, seed=3)
    c = stratified_subset(fashion.train_labels, 100, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.sort(a), np.sort(c))
    assert np.bincount(fashion.train_labels[a]).tolist() == [100] * 10
    assert len(set(a.tolist())) == 1000


@pytest.fixture
def cifar_archive(tmp_path):
    """CIFAR-10's real python archive format (tests/real_formats/cifar10.py), 20 images per batch."""
    return cifar10_format.write_archive(tmp_path / "archive" / "cifar-10-python.tar.gz", per_batch=20)


def test_cifar10_fixture_is_the_published_format(cifar_archive):
    with tarfile.open(cifar_archive) as tar:
        assert tar.getnames()[0] == "cifar-10-batches-py" and tar.getmember("cifar-10-batches-py").isdir()
        raws = {name: tar.extractfile(f"cifar-10-batches-py/{name}").read()
                for name in [*cifar10_format.TRAIN, "test_batch", "batches.meta"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy 2 must not warn about the pickles' numpy.core.multiarray
        for raw in raws.values():
            pickletools.dis(raw, out=io.StringIO())
            assert b"U\x0bbatch_label" in raw or b"U\x0blabel_names" in raw  # py2 str: SHORT_BINSTRING
        batch = pickle.loads(raws["data_batch_3"], encoding="bytes")  # the CIFAR page's own loader
        meta = pickle.loads(raws["batches.meta"], encoding="bytes")
        ds = load_cifar10(cifar_archive)
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (20, 3072)
    assert len(batch[b"labels"]) == 20 and set(batch[b"labels"]) == set(range(10))
    assert batch[b"batch_label"] == b"training batch 3 of 5" and batch[b"filenames"][0].endswith(b".png")
    assert meta[b"label_names"][0] == b"airplane" and meta[b"num_vis"] == 3072
    assert ds.train_images.shape == (100, 3, 32, 32) and ds.test_images.shape == (20, 3, 32, 32)


def test_load_cifar10_gives_bgr_chw_and_the_archives_classes(tmp_path):
    members = cifar10_format.batches(per_batch=20)
    members["batches.meta"]["label_names"] = [f"class {i}" for i in range(10)]
    path = cifar10_format.write_archive(tmp_path / "c.tar.gz", members=members)
    ds = load_cifar10(path)
    rgb = members["data_batch_2"]["data"][5].reshape(3, 32, 32)
    np.testing.assert_array_equal(ds.train_images[20 + 5], rgb[::-1])  # B, G, R planes
    np.testing.assert_array_equal(ds.test_labels, members["test_batch"]["labels"])
    assert ds.classes == [f"class {i}" for i in range(10)]


def file_state(path):
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns


def test_prepare_cifar10_from_an_archive(tmp_path, cifar_archive):
    before = file_state(cifar_archive)
    info = data.prepare("cifar10", per_class=2, seed=0, repo=tmp_path, log=lambda *_: None, archive=cifar_archive)
    folder = tmp_path / "data/q1/cifar10"
    assert (info["train_count"], info["val_count"], info["subset_count"]) == (100, 20, 20)
    assert info["classes"] == cifar10_format.LABEL_NAMES and info["image_shape"] == [3, 32, 32]
    assert (folder / "classes.txt").read_text().split("\n")[:2] == ["airplane", "automobile"]
    assert info["archive"]["path"] == str(cifar_archive.resolve())
    assert info["archive"]["size"] == cifar_archive.stat().st_size
    assert not (tmp_path / "data/cifar10").exists(), "a given archive is used where it is, not copied"
    # what Caffe reads: the first training record is data_batch_1's first image, its RGB planes as BGR
    with tarfile.open(cifar_archive) as tar:
        first = pickle.load(tar.extractfile("cifar-10-batches-py/data_batch_1"), encoding="bytes")
    image, label = next(lmdb_io.read_lmdb(folder / "train_lmdb"))
    np.testing.assert_array_equal(image, first[b"data"][0].reshape(3, 32, 32)[::-1])
    assert label == first[b"labels"][0] and lmdb_io.count(folder / "val_lmdb") == 20
    # the mean is compute_image_mean's, over the subset
    subset = np.stack([im for im, _ in lmdb_io.read_lmdb(folder / "train_subset_lmdb")])
    np.testing.assert_allclose(lmdb_io.read_binaryproto(folder / "train_subset_mean.binaryproto"),
                               subset.mean(axis=0), atol=1e-3)
    assert file_state(cifar_archive) == before
    # the same archive again: nothing to do; another archive (or this one changed): prepared again
    logged = []
    data.prepare("cifar10", per_class=2, seed=0, repo=tmp_path, log=logged.append, archive=cifar_archive)
    assert logged == []
    other = cifar10_format.write_archive(tmp_path / "other.tar.gz", per_batch=20, seed=1)
    info = data.prepare("cifar10", per_class=2, seed=0, repo=tmp_path, log=logged.append, archive=other)
    assert len(logged) == 1 and str(other) in logged[0] and info["archive"]["path"] == str(other.resolve())


@pytest.fixture(scope="module")
def code_repo(tmp_path_factory):
    """A copy of the code that `python -m q1_dropout_augment.data` runs, so that it prepares into a
    temporary repo (it writes under the clone it is run from) and not into this clone's data/."""
    repo = tmp_path_factory.mktemp("q1clone")
    skip = shutil.ignore_patterns("__pycache__", "setup")
    for package in ("tools", "q1_dropout_augment"):
        shutil.copytree(REPO / package, repo / package, ignore=skip)
    return repo


def run_data_cli(repo, *args):
    return subprocess.run([sys.executable, "-m", "q1_dropout_augment.data", *map(str, args)], cwd=repo,
                          capture_output=True, text=True, timeout=120)


def test_data_cli_prepares_from_an_archive(code_repo, cifar_archive):
    before = file_state(cifar_archive)
    proc = run_data_cli(code_repo, "--archive", cifar_archive, "--per-class", 2)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert info["dataset"] == "cifar10" and info["subset_count"] == 20
    assert info["archive"]["path"] == str(cifar_archive.resolve())
    assert (code_repo / "data/q1/cifar10/train_subset_mean.npy").exists()
    assert file_state(cifar_archive) == before


def drop_test_batch(members):
    members["test_batch"] = None


def one_label_short(members):
    members["data_batch_3"]["labels"].pop()


def label_ten(members):
    members["test_batch"]["labels"][7] = 10


@pytest.mark.parametrize("damage, message", [
    (drop_test_batch, r"lacks cifar-10-batches-py/test_batch"),
    (one_label_short, r"cifar-10-batches-py/data_batch_3: 'labels' has 19 entries but 'data' has 20 rows"),
    (label_ten, r"cifar-10-batches-py/test_batch: 'labels' holds 10 \(entry 7"),
    ("truncate", r"not a whole gzip tar"),
])
def test_damaged_cifar10_archives_fail_in_one_line(tmp_path, code_repo, damage, message):
    path = tmp_path / "cifar-10-python.tar.gz"
    members = cifar10_format.batches(per_batch=20)
    if damage == "truncate":
        whole = cifar10_format.write_archive(path, members=members).read_bytes()
        path.write_bytes(whole[:len(whole) // 2])  # a download cut off half-way
    else:
        damage(members)
        cifar10_format.write_archive(path, members=members)
    before = file_state(path)
    proc = run_data_cli(code_repo, "--archive", path, "--per-class", 1)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), proc.stderr
    assert re.search(message, lines[0]) and "--archive" in lines[0] and "download it again" in lines[0]
    assert file_state(path) == before


def test_a_cut_gzip_trailer_is_noticed(tmp_path):
    whole = cifar10_format.write_archive(tmp_path / "c.tar.gz").read_bytes()
    (tmp_path / "c.tar.gz").write_bytes(whole[:-6])  # every tar block there, the gzip CRC and size cut
    with pytest.raises(DatasetError, match="not a whole gzip tar"):
        load_cifar10(tmp_path / "c.tar.gz")


def test_archive_is_refused_with_fashion_mnist_and_when_missing(tmp_path, capsys, cifar_archive):
    with pytest.raises(SystemExit, match="--archive .* but --dataset is fashion-mnist"):
        data.main(["--dataset", "fashion-mnist", "--archive", str(cifar_archive)])
    with pytest.raises(SystemExit, match="but --dataset is fashion-mnist"):
        experiment.main(["--dataset", "fashion-mnist", "--archive", str(cifar_archive)])
    with pytest.raises(SystemExit, match="nothing.tar.gz: No such file.*--archive PATH"):
        experiment.main(["--archive", str(tmp_path / "nothing.tar.gz")])
    assert data.resolve("auto", tmp_path, archive=cifar_archive) == "cifar10"
    assert not (tmp_path / "data").exists(), "nothing downloaded"


def test_bad_input_is_refused_before_training(tmp_path, fashion):
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        data.resolve("mnist", tmp_path)
    with pytest.raises(ValueError, match="unknown variant 'dropouts'"):
        nets.flags("dropouts")
    with pytest.raises(DatasetError, match="only 6000"):
        stratified_subset(fashion.train_labels, 7000)
    with pytest.raises(ValueError, match="crop_size 30 must be smaller"):
        nets.train_val(dataclasses.replace(TINY, crop=30), "augment")
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar file at all")
    with pytest.raises(DatasetError, match="damaged.*download it again"):
        load_cifar10(tmp_path / "broken.tar.gz")
    with gzip.open(tmp_path / "short-idx.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28]) + b"\0" * 100)
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "short-idx.gz")


@pytest.mark.slow
def test_experiment_without_graphviz_skips_the_net_diagrams_in_one_line(tmp_path, monkeypatch, capsys):
    from tools.draw_net import GRAPHVIZ_MISSING

    no_dot = tmp_path / "bin-without-dot"  # the Caffe binaries are found by their full path, not through PATH
    no_dot.mkdir()
    monkeypatch.setenv("PATH", str(no_dot))
    out = experiment.run("fashion-mnist", per_class=2, seed=0, variants=["baseline", "dropout"], max_iter=4,
                         repo=tmp_path / "repo", progress=False)
    printed = capsys.readouterr()
    said = [line for line in (printed.out + printed.err).splitlines() if "dot" in line or "diagram" in line]
    assert said == [f"[q1] {GRAPHVIZ_MISSING}"]
    assert not (out / "nets").exists() and (out / "val_loss_vs_iter.png").exists()
    assert "`val_loss_all.png`." in (out / "summary.md").read_text()


@pytest.mark.slow
def test_experiment_end_to_end_writes_plots_and_summary(tmp_path, capsys):
    out = experiment.run("fashion-mnist", per_class=5, seed=0, variants=["baseline", "dropout"], max_iter=4,
                         repo=tmp_path, progress=False)
    drawn = ("nets/baseline.png",) if shutil.which("dot") else ()  # without Graphviz: skipped, one line
    for name in ("val_loss_vs_iter.png", "accuracy_vs_iter.png", "val_loss_all.png", "summary.md",
                 *drawn, "baseline/train.log.test1"):
        assert (out / name).exists(), name
    summary = (out / "summary.md").read_text()
    assert "fashion-mnist" in summary and "| baseline |" in summary and "| dropout |" in summary
    # non-default settings: a folder of their own, prototxts included; the committed ones and the default run's
    # folder are not touched
    assert out.name.startswith("fashion-mnist-") and (out / "settings.json").exists()
    assert (out / "models/dropout/solver.prototxt").exists() and not (tmp_path / "models").exists()
    assert not (tmp_path / "results/q1/fashion-mnist").exists()
    # the last validation pass is at the last iteration (Caffe tests only at multiples of test_interval)
    assert [r["NumIters"] for r in parse_log(out / "baseline/train.log").test(0)] == [0, 4]
    # the summary's validation numbers are the final weights on the whole validation set, not the sample
    full = json.loads((out / "baseline/val_full.json").read_text())
    assert full["images"] == 10000 and full["loss"] > 0
    assert f"| {full['accuracy']:.3f} | " in summary.split("| baseline |")[1].split("\n")[0]
    # a second run trains nothing
    capsys.readouterr()
    experiment.run("fashion-mnist", per_class=5, seed=0, variants=["baseline", "dropout"], max_iter=4,
                   repo=tmp_path, progress=False)
    assert capsys.readouterr().out.count("already trained") == 2


def test_the_summary_draws_no_conclusion_from_the_baseline_alone(tmp_path):
    """A run of only the baseline compares it with nothing; the wall time in the table is the log's, as in
    the line printed after training, with a decimal under 10 s (not a bare 0)."""
    from tools.parse_log import Log

    spec = nets.DATASETS["fashion-mnist"]
    info = {"subset_count": 1000, "per_class": 100, "seed": 0, "val_count": 10000}
    rows = [{"NumIters": i, "Seconds": i / 100, "LearningRate": 0.01, "accuracy": 0.8, "loss": 0.6} for i in (0, 40)]
    log = Log(train=[], tests=[rows, rows])
    text = experiment.summarise("fashion-mnist", spec, info, {"baseline": log}, tmp_path)
    assert "only the baseline ran" in text and "beat" not in text
    assert "| baseline | 0.800 | 0.800 | +0.000 | 0.600 | 0.4 |" in text
    assert experiment.seconds_text(experiment.train_seconds(log)) == "0.4"
    both = experiment.summarise("fashion-mnist", spec, info, {"baseline": log, "dropout": log}, tmp_path)
    assert "none of the variants run with it (dropout) beat it" in both
