"""Q2: the AlexNet generator is the reference net, fine-tuning copies the pretrained layers, every mode
(and the cached-feature path) trains with the real binary, prediction writes a submission, and bad
weights are explained."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import caffe
import numpy as np
import pytest
from conftest import REPO
from google.protobuf import text_format

from q2_wikiart_finetune import experiment, features, predict, transfer_demo
from q2_wikiart_finetune.task import MODES, WIKIART, write_deploy
from q2_wikiart_finetune.task import files as mode_files
from q2_wikiart_finetune.task import solver as mode_solver
from tools import alexnet, caffe_runner, lmdb_io, weights
from tools.transform import mean_bgr

TINY_SIZES = transfer_demo.Sizes(pretrain_per_class=20, pretrain_val_per_class=10, target_per_class=4,
                           target_val_per_class=10, heldout_per_class=5, pretrain_iter=20, transfer_iter=10)
CAFFE_SRC = Path(os.environ.get("CAFFE_CACHE", Path.home() / ".cache/caffe-toolkit")) / "src"


def net_from(proto, tmp_path, name="net.prototxt", phase=caffe.TEST):
    path = tmp_path / name
    path.write_text(str(proto))
    return caffe.Net(str(path), phase)


def test_alexnet_blob_shapes_are_the_reference(tmp_path):
    net = net_from(alexnet.deploy(batch_size=1), tmp_path)
    shapes = {k: v.data.shape[1:] for k, v in net.blobs.items()}
    assert shapes["conv1"] == (96, 55, 55) and shapes["pool1"] == (96, 27, 27)
    assert shapes["conv2"] == (256, 27, 27) and shapes["pool2"] == (256, 13, 13)
    assert shapes["conv3"] == (384, 13, 13) and shapes["conv4"] == (384, 13, 13)
    assert shapes["conv5"] == (256, 13, 13) and shapes["pool5"] == (256, 6, 6)
    assert shapes["fc6"] == (4096,) and shapes["fc7"] == (4096,) and shapes["prob"] == (1000,)
    assert net.params["conv2"][0].data.shape == (256, 48, 5, 5), "conv2 has two groups"


def reference_train_val():
    archives = sorted(CAFFE_SRC.glob("caffe_*.orig.tar.gz"))
    if not archives:
        pytest.skip("Debian's Caffe source is not in the build cache")
    with tarfile.open(archives[-1]) as tar:
        text = tar.extractfile("models/bvlc_alexnet/train_val.prototxt").read().decode()
    return text_format.Parse(text, caffe.proto.caffe_pb2.NetParameter())


def test_alexnet_matches_bvlc_train_val_layer_for_layer():
    ref = {layer.name: layer for layer in reference_train_val().layer if layer.type != "Data"}
    ours = {layer.name: layer for layer in
            alexnet.train_val("t.txt", "v.txt", num_classes=1000, last_layer="fc8").layer if layer.type != "ImageData"}
    assert list(ours) == list(ref)
    for name, layer in ours.items():
        r = ref[name]
        assert (layer.type, list(layer.bottom), list(layer.top)) == (r.type, list(r.bottom), list(r.top)), name
        for field in ("convolution_param", "lrn_param", "pooling_param", "dropout_param"):
            assert getattr(layer, field) == getattr(r, field), f"{name}.{field}"
        if name != "fc8":  # the new last layer learns 10x/20x faster
            assert list(layer.param) == list(r.param), name
            assert layer.inner_product_param == r.inner_product_param, name
    fc8 = ours["fc8"].inner_product_param
    assert fc8.num_output == 1000 and [p.lr_mult for p in ours["fc8"].param] == [10, 20]


def test_modes_and_the_new_last_layer():
    ft = alexnet.train_val("t.txt", "v.txt", last_layer="fc8_wikiart", mode="finetune")
    fe = alexnet.train_val("t.txt", "v.txt", last_layer="fc8_wikiart", mode="feature_extractor")
    lr = {m: {layer.name: [p.lr_mult for p in layer.param] for layer in net.layer if layer.param}
          for m, net in (("ft", ft), ("fe", fe))}
    assert lr["ft"]["conv1"] == [1, 2] and lr["ft"]["fc8_wikiart"] == [10, 20]
    assert all(v == [0, 0] for k, v in lr["fe"].items() if k != "fc8_wikiart") and lr["fe"]["fc8_wikiart"] == [10, 20]
    data = [layer for layer in ft.layer if layer.type == "ImageData"]
    assert [d.transform_param.mirror for d in data] == [True, False]
    assert data[0].image_data_param.new_height == 256 and data[0].transform_param.crop_size == 227
    s = mode_solver(WIKIART, "finetune", "models/q2/finetune")
    assert (s.base_lr, s.lr_policy, s.momentum, s.weight_decay) == pytest.approx((0.001, "step", 0.9, 0.0005))
    assert s.stepsize < 100000 / 10 and s.test_iter == [9]  # 9 x 43 = the 387 validation images, each once
    with pytest.raises(ValueError, match="unknown mode"):
        alexnet.train_val("t", "v", mode="frozen")


def test_validation_passes_count_every_image_exactly_once():
    # the exercise's 387 validation images: 9 batches of 43, not 8 of 50 (which would count 13 twice)
    assert (WIKIART.val_batch_size(), WIKIART.test_iter()) == (43, 9)
    for count in (387, 500, 15, 97, 1):
        batch, passes = WIKIART.val_batch_size(count), WIKIART.test_iter(count)
        assert batch * passes == count and batch <= WIKIART.val_batch, count
    net = text_format.Parse((REPO / "models/q2/finetune/train_val.prototxt").read_text(),
                            caffe.proto.caffe_pb2.NetParameter())
    val = next(layer for layer in net.layer if layer.include and layer.include[0].phase == caffe.TEST)
    solver = (REPO / "models/q2/finetune/solver.prototxt").read_text()
    assert val.image_data_param.batch_size * int(solver.split("test_iter: ")[1].split()[0]) == WIKIART.val_count


def test_committed_q2_and_demo_prototxts_equal_the_generators():
    for task, modes in [(WIKIART, MODES), *transfer_demo.default_tasks()]:
        for mode in modes:
            for name, text in mode_files(task, mode).items():
                committed = REPO / task.path(mode, name)
                assert committed.exists(), (
                    f"{committed} missing: run `.venv/bin/python -m q2_wikiart_finetune.task --write`")
                assert committed.read_text() == text, f"{committed} differs from the generator's output"


def one_at_a_time(clf, files, blob, mirror=False):
    """What the extraction computed before it was batched: each picture by itself through caffe.io (load_image,
    resize_image, the centre crop, Transformer.preprocess), the whole net, the mirror images decoded again."""
    out = []
    for f in files:
        picture = caffe.io.resize_image(caffe.io.load_image(str(f)), (clf.new_size, clf.new_size))
        off = (clf.new_size - clf.crop) // 2
        crop = picture[off:off + clf.crop, off:off + clf.crop]
        x = clf.transformer.preprocess("data", crop[:, ::-1] if mirror else crop)
        clf.net.blobs["data"].reshape(1, *x.shape)
        clf.net.blobs["data"].data[...] = x
        clf.net.forward()
        out.append(clf.net.blobs[blob].data[0].copy())
    return np.asarray(out)


def test_batched_extraction_gives_the_features_of_one_picture_at_a_time(tmp_path):
    """predict.predict (decoded in a thread, a batch of images and their mirror images in one pass, the net run to
    fc7's last writer) gives what one picture at a time through pycaffe gives, on real JPEGs of several sizes
    (shrunk, enlarged, grey, not square, already the net's size) and a last batch that is not full."""
    import skimage.data
    from PIL import Image

    pictures = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.camera(),
                skimage.data.chelsea()[:40, :30], skimage.data.rocket()[:112, 200:312]]  # the last: already 112x112
    files = []
    for i, picture in enumerate(pictures):
        files.append(tmp_path / f"{i}.jpg")
        Image.fromarray(picture).save(files[-1], "JPEG", quality=90)
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(alexnet.deploy(batch_size=1, width=0.25, crop=99, num_classes=5)))
    weights = tmp_path / "w.caffemodel"
    caffe.Net(str(deploy), caffe.TEST).save(str(weights))  # Caffe's fillers
    clf = predict.load_classifier(deploy, weights, new_size=112, crop=99, mean=[104.0, 117.0, 123.0], checked=True)
    want = np.concatenate([one_at_a_time(clf, files, "fc7"), one_at_a_time(clf, files, "fc7", mirror=True)])
    assert (want > 0).any() and not np.array_equal(want[:5], want[5:]), "fc7 of real pictures, mirrors differ"
    scale = np.abs(want).max()
    for workers in (0, 1):
        got = predict.predict(clf, files, mirror="both", blob="fc7", batch=4, workers=workers, progress=False)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale)
    mirrored = predict.predict(clf, files, mirror=True, blob="fc7", batch=3, progress=False)
    np.testing.assert_allclose(mirrored, want[5:], rtol=1e-5, atol=1e-6 * scale)
    probs = one_at_a_time(clf, files, clf.output)
    np.testing.assert_allclose(predict.predict(clf, files, progress=False), probs, rtol=1e-5, atol=1e-7)
    # the batch transform is the Transformer's, value for value
    picture = caffe.io.resize_image(caffe.io.load_image(str(files[1])), (99, 99))
    batch = np.empty((2, 3, 99, 99), np.float32)
    predict.preprocess_into(clf.transformer, [picture, picture[:, ::-1]], batch)
    assert np.array_equal(batch[0], clf.transformer.preprocess("data", picture))
    assert np.array_equal(batch[1], clf.transformer.preprocess("data", picture[:, ::-1]))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The Fashion-MNIST transfer demo end to end at a tiny size: every mode, real binary, real data."""
    repo = tmp_path_factory.mktemp("q2repo")
    results = transfer_demo.run(TINY_SIZES, repo=repo, progress=False, seeds=(1, 2))
    return repo, results


@pytest.mark.slow
def test_every_mode_trains_and_is_evaluated(demo_run):
    repo, results = demo_run
    assert set(results) == {"finetune", "feature_extractor", "cached_features", "scratch"}
    _, labels = predict.read_list(repo / transfer_demo.DATA / "target/val.txt", repo / transfer_demo.DATA / "images")
    for mode, r in results.items():
        assert r["iterations"] == TINY_SIZES.transfer_iter and Path(r["weights"]).exists(), mode
        # the reported accuracy is that of the mode's own predictions on every validation image, each once
        saved = np.load(repo / r["run_dir"] / "val_predictions.npz")
        assert saved["probs"].shape == (len(labels), 5), mode
        assert r["accuracy"] == pytest.approx(np.mean(saved["probs"].argmax(axis=1) == np.asarray(labels))), mode
    out = repo / transfer_demo.RESULTS
    for f in ("transfer_accuracy_vs_iter.png", "transfer_summary.md", "heldout_submission.csv",
              "transfer/summary.md", "transfer/train_loss_vs_iter.png", "transfer/finetune/val_confusion.png"):
        assert (out / f).exists(), f
    rows = (out / "heldout_submission.csv").read_text().splitlines()
    assert rows[0] == "id,label" and len(rows) == 1 + 5 * TINY_SIZES.heldout_per_class
    # labels are Fashion-MNIST's class numbers, the target classes 5-9, as in the kept-back answers
    assert {int(row.split(",")[1]) for row in rows[1:]} <= set(transfer_demo.TARGET_CLASSES)
    answers = (repo / transfer_demo.DATA / "heldout_answers.csv").read_text().split()[1:]
    assert {int(row.split(",")[1]) for row in answers} == set(transfer_demo.TARGET_CLASSES)
    score = float((out / "heldout_score.txt").read_text().split()[2])
    got = dict(row.split(",") for row in rows[1:])
    assert score == pytest.approx(np.mean([got[i] == lab for i, lab in (row.split(",") for row in answers)]), abs=1e-4)
    # the pretraining run has one mode, trained from random fillers: its summary says so, and no "best mode"
    pretrain = (out / "pretrain/summary.md").read_text()
    assert "from scratch" in pretrain and "best mode" not in pretrain
    assert "the best mode" in (out / "transfer/summary.md").read_text()
    measured = json.loads((out / "transfer_results.json").read_text())
    assert measured["modes"]["finetune"]["accuracy"] == results["finetune"]["accuracy"]
    # every seed measured; the second seed's prototxts live with its run under results/, not in models/
    assert set(measured["seeds"]) == {"1", "2"} and measured["seeds"]["1"] == measured["modes"]
    assert set(measured["seeds"]["2"]) == set(results)
    second = repo / transfer_demo.RESULTS / "seed-2"
    assert "random_seed: 2" in (second / "models/transfer/finetune/solver.prototxt").read_text()
    assert (second / "scratch/finetune/train.log").exists()
    assert not (repo / "models/demo/transfer-seed-2").exists()
    summary = (out / "transfer_summary.md").read_text()
    assert "mean (range)" in summary and "over 2 seeds" in summary
    card = (repo / "results/demo/pretrained/model.json").read_text()
    assert '"fc8' not in card and '"width": 0.25' in card


@pytest.mark.slow
def test_finetuning_copies_every_layer_but_the_new_one(demo_run):
    repo, results = demo_run
    pretrained = repo / "results/demo/q2/pretrain/finetune" / f"snap_iter_{TINY_SIZES.pretrain_iter}.caffemodel"
    after = Path(results["feature_extractor"]["weights"])  # frozen body: lr_mult 0 and decay_mult 0
    for layer in ("conv1", "conv3", "fc6", "fc7"):
        for before_blob, after_blob in zip(weights.layer_params(pretrained, layer), weights.layer_params(after, layer),
                                           strict=True):
            np.testing.assert_array_equal(before_blob, after_blob)
    assert weights.layer_params(after, "fc8_fashion")[0].shape == (5, 1024)
    with pytest.raises(KeyError):
        weights.layer_params(pretrained, "fc8_fashion")  # it was never in the pretrained model
    tuned = Path(results["finetune"]["weights"])
    a, b = weights.layer_params(pretrained, "conv1")[0], weights.layer_params(tuned, "conv1")[0]
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.1 * np.abs(a).max(), "fine-tuned, not replaced"


@pytest.mark.slow
def test_cached_features_merge_into_the_deploy_net(demo_run):
    repo, results = demo_run
    out = repo / transfer_demo.RESULTS / "transfer/cached_features"
    assert (out / "train_features_lmdb/data.mdb").exists()
    merged = Path(results["cached_features"]["weights"])
    head = weights.layer_params(out / f"snap_iter_{TINY_SIZES.transfer_iter}.caffemodel", "fc8_fashion")
    for a, b in zip(weights.layer_params(merged, "fc8_fashion"), head, strict=True):
        np.testing.assert_array_equal(a, b)
    feats = list(lmdb_io.read_lmdb(out / "train_features_lmdb"))
    assert len(feats) == 2 * 5 * TINY_SIZES.target_per_class, "with mirrored copies"
    assert feats[0][0].shape == (1024, 1, 1) and feats[0][0].dtype == np.float32


@pytest.mark.slow
def test_a_weights_file_that_does_not_fit_is_explained(demo_run, tmp_path):
    repo, _ = demo_run
    _, info = transfer_demo.plan(TINY_SIZES)
    pretrained = f"results/demo/q2/pretrain/finetune/snap_iter_{TINY_SIZES.pretrain_iter}.caffemodel"
    clash = transfer_demo.transfer_task(info, pretrained, TINY_SIZES, last_layer="fc8", num_classes=3, results="clash")
    write_deploy(clash, repo)
    with pytest.raises(weights.WeightsMismatch, match="layer 'fc8' weights: .* holds 5x1024, the net wants 3x1024.*"
                                                      "new name"):
        experiment.check_weights_fit(clash, pretrained, repo)


@pytest.mark.slow
def test_predict_cli_writes_submission_and_scores(demo_run, tmp_path):
    repo, results = demo_run
    task = transfer_demo.transfer_task(transfer_demo.plan(TINY_SIZES)[1], "", TINY_SIZES)
    deploy = repo / task.path("finetune", "deploy.prototxt")
    cmd = [sys.executable, "-m", "q2_wikiart_finetune.predict", "--weights", results["finetune"]["weights"],
           "--images", str(repo / transfer_demo.DATA / "target/val.txt"),
           "--root", str(repo / transfer_demo.DATA / "images"),
           "--deploy", str(deploy), "--mean-value", *map(str, task.mean_value), "--new-size", "112", "--crop", "99",
           "--out", str(tmp_path / "sub.csv"), "--oversample", "--id-column", "image", "--label-column", "style"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = (tmp_path / "sub.csv").read_text().splitlines()
    assert rows[0] == "image,style" and len(rows) == 1 + 5 * TINY_SIZES.target_val_per_class
    assert "accuracy" in out.stdout and (tmp_path / "sub_confusion.png").exists()
    assert "Sandal" in (tmp_path / "sub_accuracy.md").read_text()
    # a folder of images: ids are the file names
    folder = subprocess.run([*cmd[:6], str(repo / transfer_demo.DATA / "images/heldout"), *cmd[7:]], cwd=REPO,
                            capture_output=True, text=True)
    assert folder.returncode == 0, folder.stderr
    assert (tmp_path / "sub.csv").read_text().splitlines()[1].startswith("00000,")
    # a list naming a missing image: one clear line, no traceback
    (tmp_path / "bad.txt").write_text("nowhere.png 1\n")
    bad = subprocess.run([*cmd[:6], str(tmp_path / "bad.txt"), *cmd[7:]], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "missing image" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_centre_crop_and_oversampling_agree_roughly(demo_run):
    repo, results = demo_run
    task = transfer_demo.transfer_task(transfer_demo.plan(TINY_SIZES)[1], "", TINY_SIZES)
    mean = mean_bgr(None, task.mean_value)
    clf = predict.load_classifier(repo / task.path("finetune", "deploy.prototxt"), results["finetune"]["weights"],
                                  new_size=task.new_size, crop=task.crop, mean=mean)
    files, _ = predict.read_list(repo / transfer_demo.DATA / "target/val.txt", repo / task.image_root)
    centre = predict.predict(clf, files[:10], progress=False)
    ten = predict.predict(clf, files[:10], oversample=True, progress=False)
    assert centre.shape == ten.shape == (10, 5)
    np.testing.assert_allclose(centre.sum(axis=1), 1, rtol=1e-5)
    assert np.abs(centre - ten).max() < 0.5


@pytest.mark.slow
def test_gpu_refused_on_cpu_build(demo_run):
    repo, results = demo_run
    from tools import paths

    if paths.is_gpu_build():
        pytest.skip("GPU build")
    with pytest.raises(caffe_runner.CaffeError, match="CPU-only"):
        predict.load_classifier(repo / "models/demo/transfer/finetune/deploy.prototxt", results["finetune"]["weights"],
                                new_size=112, crop=99, mean=[0, 0, 0], gpu="0")


@pytest.mark.slow
def test_features_module_extracts_what_the_net_computes(demo_run):
    repo, results = demo_run
    task = transfer_demo.transfer_task(transfer_demo.plan(TINY_SIZES)[1], results["finetune"]["weights"], TINY_SIZES)
    val_list = f"{transfer_demo.DATA}/target/val.txt"
    n = features.extract(task, results["finetune"]["weights"], val_list, repo / "feat_lmdb", repo=repo, progress=False)
    assert n == 5 * TINY_SIZES.target_val_per_class
    stored = list(lmdb_io.read_lmdb(repo / "feat_lmdb"))
    got = np.stack([f.ravel() for f, _ in stored])
    # fc7 of the same net on the same images, straight from pycaffe, in the extractor's seeded shuffled order
    files, labels = predict.read_list(repo / val_list, repo / task.image_root)
    mean = mean_bgr(None, task.mean_value)
    clf = predict.load_classifier(repo / task.path("finetune", "deploy.prototxt"), results["finetune"]["weights"],
                                  new_size=task.new_size, crop=task.crop, mean=mean)
    want = predict.predict(clf, files, blob="fc7", progress=False).reshape(n, -1)
    order = np.random.RandomState(0).permutation(n)
    np.testing.assert_allclose(got, want[order], rtol=1e-5, atol=1e-6)
    assert [int(lab) for _, lab in stored] == [labels[i] for i in order]
    assert (got >= 0).all() and (got > 0).any(), "fc7 after its ReLU"


@pytest.mark.slow
def test_cached_features_are_extracted_again_when_the_weights_or_the_list_change(demo_run, tmp_path):
    repo, results = demo_run
    task = transfer_demo.transfer_task(transfer_demo.plan(TINY_SIZES)[1], results["finetune"]["weights"], TINY_SIZES)
    _, info = transfer_demo.plan(TINY_SIZES)
    pretrained = f"results/demo/q2/pretrain/finetune/snap_iter_{TINY_SIZES.pretrain_iter}.caffemodel"
    cached = repo / transfer_demo.RESULTS / "transfer/cached_features/train_features_lmdb"
    train_list = f"{transfer_demo.DATA}/target/train.txt"
    entries = 2 * 5 * TINY_SIZES.target_per_class
    source = features.feature_source(task, pretrained, train_list, True, repo)
    lmdb_io.check(cached, entries=entries, source=source, num_classes=5)  # what the demo stored: reused
    # other weights (the fine-tuned ones) under the same name: the manifest no longer matches
    other = tmp_path / "weights.caffemodel"
    other.write_bytes((repo / results["finetune"]["weights"]).read_bytes())
    moved = features.feature_source(task, str(other), train_list, True, repo)
    with pytest.raises(lmdb_io.LmdbError):
        lmdb_io.check(cached, entries=entries, source=moved, num_classes=5)
    # the same weights file rewritten in place (new content, same path)
    copy = repo / "pretrained-copy.caffemodel"
    copy.write_bytes((repo / pretrained).read_bytes())
    before = features.feature_source(task, copy.name, train_list, True, repo)
    copy.write_bytes((repo / results["finetune"]["weights"]).read_bytes())
    assert features.feature_source(task, copy.name, train_list, True, repo) != before
    # another image list
    lines = (repo / train_list).read_text().splitlines()
    (repo / "shorter.txt").write_text("\n".join(lines[:-1]) + "\n")
    assert features.feature_source(task, pretrained, "shorter.txt", True, repo)["list_sha256"] != source["list_sha256"]


def test_the_transfer_summary_concludes_only_beyond_the_spread_over_seeds():
    def runs(finetune, scratch, seconds=(2.0, 10.0)):
        return {s: {"finetune": {"accuracy": f, "seconds": 17.0}, "scratch": {"accuracy": c, "seconds": 22.0},
                    "cached_features": {"accuracy": 0.64, "seconds": seconds[0]},
                    "feature_extractor": {"accuracy": 0.67 + 0.001 * s, "seconds": seconds[1]}}
                for s, (f, c) in enumerate(zip(finetune, scratch, strict=True), 1)}

    overlap = " ".join(transfer_demo.conclusions(runs([0.814, 0.808, 0.80], [0.816, 0.806, 0.81])))
    assert "do not tell them apart" in overlap and "beats" not in overlap and "over 3 seeds" in overlap
    apart = " ".join(transfer_demo.conclusions(runs([0.84, 0.85, 0.845], [0.80, 0.81, 0.805])))
    assert "fine-tuning beats training from scratch by 0.040" in apart
    assert "Cached features take 0.20 of the feature extractor's time" in apart and "less accurate" in apart
    single = " ".join(transfer_demo.conclusions(runs([0.9], [0.5])))
    assert "beats" not in single and "one run measures no spread" in single
