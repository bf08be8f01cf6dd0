"""The real downloads, in their real formats, through the real code paths.

Stand-ins (tests/real_formats/) follow each file's published layout, not what the toolkit writes:
BVLC AlexNet as a 2014 V1 file with legacy blob shapes, Caffe's ILSVRC aux archive with its eight
members and a 1x3x256x256 legacy mean. Caffe itself is the referee where it can be: a shape our
check refuses must also be one that Caffe refuses.
"""

import os
import shlex
import subprocess
import sys

import caffe
import nbformat
import numpy as np
import pytest
from conftest import REPO
from http_fixtures import FileServer
from PIL import Image
from real_formats import ilsvrc_aux
from real_formats.bvlc_alexnet import LEGACY_SHAPES, write_v1_alexnet

from q2_wikiart_finetune import experiment
from q2_wikiart_finetune import task as tasks
from q2_wikiart_finetune.wikiart_index import STYLES
from q3_visualize_break import loading, run_notebooks
from tools import weights
from tools.transform import mean_bgr
from tools.weights import StoredShape, WeightsMismatch

Q2_DEPLOY = REPO / tasks.WIKIART.path("finetune", "deploy.prototxt")


@pytest.fixture(scope="session")
def bvlc_v1(tmp_path_factory):
    """A full-size (233 MB) V1 bvlc_alexnet.caffemodel with random values."""
    return write_v1_alexnet(tmp_path_factory.mktemp("bvlc") / "bvlc_alexnet.caffemodel")


@pytest.fixture(scope="session")
def ilsvrc_data(tmp_path_factory):
    """A data folder with ilsvrc12/ filled by `python -m tools.get_ilsvrc_aux` from a local server."""
    data = tmp_path_factory.mktemp("data")
    with FileServer() as server:
        url = server.add("/caffe_ilsvrc12.tar.gz", ilsvrc_aux.archive_bytes())
        proc = subprocess.run([sys.executable, "-m", "tools.get_ilsvrc_aux", "--url", url, "--out",
                               str(data / "ilsvrc12")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return data


# ---- the weights check ------------------------------------------------------------------------------------------


def test_legacy_shapes_match_the_way_caffe_matches_them():
    bias, fc = StoredShape((1, 1, 1, 96), legacy=True), StoredShape((1, 1, 4096, 9216), legacy=True)
    assert bias.fits((96,)) and fc.fits((4096, 9216))
    assert not bias.fits((96, 1)) and not fc.fits((9216, 4096)) and not bias.fits((1, 1, 1, 1, 96))
    current = StoredShape((4096, 9216), legacy=False)
    assert current.fits((4096, 9216)) and not current.fits((1, 1, 4096, 9216))


def test_v1_file_is_read_with_its_legacy_shapes(bvlc_v1):
    stored = weights.param_shapes(bvlc_v1)
    assert list(stored) == list(LEGACY_SHAPES)
    for name, shapes in LEGACY_SHAPES.items():
        assert [s.dims for s in stored[name]] == shapes and all(s.legacy for s in stored[name])
    # the same numbers pycaffe copies into the net (Caffe upgrades the V1 file on load)
    conv1 = weights.layer_params(bvlc_v1, "conv1")
    net = caffe.Net(str(REPO / "models/q3/bvlc_alexnet_deploy_gradients.prototxt"), str(bvlc_v1), caffe.TEST)
    np.testing.assert_array_equal(net.params["conv1"][0].data, conv1[0])
    np.testing.assert_array_equal(net.params["conv1"][1].data, conv1[1].ravel())


def test_q2_accepts_the_real_weights_format(bvlc_v1, capsys):
    experiment.check_weights_fit(tasks.WIKIART, bvlc_v1, REPO)  # fc8_wikiart is new: nothing to say
    assert "note" not in capsys.readouterr().out
    net = caffe.Net(str(Q2_DEPLOY), caffe.TEST)
    assert weights.check_fits(net, bvlc_v1) == ["fc8_wikiart"]


def test_q3_loads_the_real_weights_format(bvlc_v1, ilsvrc_data, monkeypatch):
    monkeypatch.setenv(loading.WEIGHTS_ENV, str(bvlc_v1))
    monkeypatch.setattr(loading, "SYNSET_WORDS", ilsvrc_data / "ilsvrc12/synset_words.txt")
    monkeypatch.setattr(loading, "IMAGENET_MEAN", ilsvrc_data / "ilsvrc12/imagenet_mean.npy")
    model = loading.load_model("bvlc_alexnet")
    assert model.weights == bvlc_v1 and model.class_index("dalmatian") == 251 and model.label(281) == "tabby"
    assert model.net.blobs["data"].data.shape == (1, 3, 227, 227)
    np.testing.assert_array_equal(model.net.params["fc8"][0].data, weights.layer_params(bvlc_v1, "fc8")[0][0, 0])


def deploy_keeping_fc8(tmp_path, num_classes=10):
    """The Q2 deploy with the new last layer still called fc8: what a student writes first."""
    text = Q2_DEPLOY.read_text().replace("fc8_wikiart", "fc8")
    assert 'name: "fc8"' in text and f"num_output: {num_classes}" in text
    path = tmp_path / "deploy_fc8.prototxt"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_a_resized_layer_is_explained_and_caffe_agrees(bvlc_v1, tmp_path):
    deploy = deploy_keeping_fc8(tmp_path)
    net = caffe.Net(str(deploy), caffe.TEST)
    with pytest.raises(WeightsMismatch) as e:
        weights.check_fits(net, bvlc_v1)
    message = str(e.value)
    assert message.startswith(f"layer 'fc8' weights: {bvlc_v1} holds 1x1x1000x4096 (legacy num/channels/height/width), "
                              "the net wants 10x4096. Fix: ")
    assert "fc8 -> fc8_wikiart" in message
    # Caffe refuses the same file for the same net (it aborts the process, hence the subprocess)
    code = f"import caffe; caffe.Net({str(deploy)!r}, {str(bvlc_v1)!r}, caffe.TEST)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Cannot copy param 0 weights from layer 'fc8'" in proc.stderr


def test_bias_and_blob_count_mismatches_name_the_blob(bvlc_v1):
    with pytest.raises(WeightsMismatch, match=r"layer 'conv1' bias: .* holds 1x1x1x96 \(legacy .*\), the net wants 95"):
        weights.check_fits({"conv1": [(96, 3, 11, 11), (95,)]}, bvlc_v1)
    with pytest.raises(WeightsMismatch, match=r"layer 'conv1': .* holds 2 blob\(s\), the net has 1 \(bias_term"):
        weights.check_fits({"conv1": [(96, 3, 11, 11)]}, bvlc_v1)
    with pytest.raises(WeightsMismatch, match=r"no weights for layer\(s\) conv9 .*trained for another net"):
        weights.check_fits({"conv1": LEGACY_SHAPES["conv1"][:1] + [(96,)], "conv9": [(1,)]}, bvlc_v1,
                           require_all=True)


def test_not_a_weights_file_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(np.random.RandomState(0).bytes(4096))
    with pytest.raises(ValueError, match="junk.caffemodel is not a Caffe weights file"):
        weights.param_shapes(junk)
    prototxt_bytes = tmp_path / "empty.caffemodel"
    prototxt_bytes.write_bytes(b"")
    with pytest.raises(ValueError, match="holds no learned weights"):
        weights.param_shapes(prototxt_bytes)


# ---- the ILSVRC aux archive -------------------------------------------------------------------------------------


def test_ilsvrc_aux_archive_in_its_real_layout(ilsvrc_data):
    folder = ilsvrc_data / "ilsvrc12"
    expected = {name for name in ilsvrc_aux.members() if name.endswith((".txt", ".binaryproto"))}
    assert {p.name for p in folder.iterdir()} == expected | {"imagenet_mean.npy", "caffe_ilsvrc12.tar.gz"}
    mean = np.load(folder / "imagenet_mean.npy")
    assert mean.shape == (3, 256, 256) and mean.dtype == np.float32
    np.testing.assert_allclose(mean.reshape(3, -1).mean(axis=1), ilsvrc_aux.MEAN_BGR, atol=0.5)
    words = (folder / "synset_words.txt").read_text().splitlines()
    assert len(words) == 1000 and words[0] == "n01440764 tench, Tinca tinca"
    assert [w.split()[0] for w in words] == sorted(w.split()[0] for w in words)


def test_predict_takes_the_legacy_mean_file(ilsvrc_data):
    bgr = mean_bgr(ilsvrc_data / "ilsvrc12/imagenet_mean.binaryproto")
    np.testing.assert_allclose(bgr, ilsvrc_aux.MEAN_BGR, atol=0.5)


# ---- Q3's notebooks on BVLC AlexNet -------------------------------------------------------------------------


@pytest.mark.slow
def test_q3_notebooks_run_on_the_real_weights_format(bvlc_v1, ilsvrc_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_DATA", str(ilsvrc_data))  # the kernel's tools.paths.DATA
    monkeypatch.delenv(loading.WEIGHTS_ENV, raising=False)
    out = tmp_path / "q3"
    executed = run_notebooks.run_notebooks(out=out, model="bvlc_alexnet", fast=True, weights=bvlc_v1)
    assert [p.name for p in executed] == list(run_notebooks.NOTEBOOKS)
    text = "".join(o.get("text", "") for p in executed for c in nbformat.read(p, as_version=4).cells
                   if c.cell_type == "code" for o in c.outputs)
    assert "model: bvlc_alexnet on CPU" in text
    for figure in ("class-model-visualizations", "saliency-maps", "fooling-images"):
        assert (out / f"{figure}.png").stat().st_size > 1000, figure


# ---- prediction as the README shows it ----------------------------------------------------------------------


def readme_command(prefix: str) -> list[str]:
    """The first command line in README.md that starts with `prefix`, split as a shell would."""
    for line in (REPO / "README.md").read_text().splitlines():
        if line.strip().startswith(prefix):
            return shlex.split(line.strip().split("  #")[0])
    raise AssertionError(f"README.md shows no command starting with {prefix!r}")


@pytest.mark.slow
def test_readme_predict_command_on_a_downloaded_wikiart_layout(bvlc_v1, ilsvrc_data, tmp_path):
    """download_wikiart.py writes val.txt with paths relative to images/; the README's command must work."""
    cmd = readme_command(".venv/bin/python -m q2_wikiart_finetune.predict")
    args = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    wikiart = tmp_path / "data/wikiart"
    (wikiart / "images").mkdir(parents=True)
    rng = np.random.RandomState(0)
    lines = []
    for i in range(12):
        Image.fromarray(rng.randint(0, 256, (256, 256, 3), np.uint8)).save(wikiart / f"images/painter-{i}_work.jpg")
        lines.append(f"painter-{i}_work.jpg {i % 10}\n")
    (wikiart / "val.txt").write_text("".join(lines))
    (wikiart / "styles.txt").write_text("".join(f"{style}\n" for style in STYLES))
    # "trained" weights: the pretrained V1 layers in the Q2 deploy, with a fresh fc8_wikiart, saved as a snapshot is
    trained = tmp_path / args["--weights"]
    trained.parent.mkdir(parents=True)
    caffe.Net(str(Q2_DEPLOY), str(bvlc_v1), caffe.TEST).save(str(trained))
    env = {**os.environ, "TOOLKIT_DATA": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}
    (tmp_path / "data/ilsvrc12").symlink_to(ilsvrc_data / "ilsvrc12")
    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / args["--out"]
    rows = out.read_text().splitlines()
    assert rows[0] == "id,label" and [r.split(",")[0] for r in rows[1:]] == [f"painter-{i}_work" for i in range(12)]
    assert "accuracy" in proc.stdout and "Baroque" in out.with_name(f"{out.stem}_accuracy.md").read_text()


def test_predict_refuses_weights_of_another_net_without_aborting(bvlc_v1, tmp_path):
    """The pretrained ImageNet file is not a fine-tuned model (no fc8_wikiart): one line, no core dump."""
    Image.fromarray(np.zeros((256, 256, 3), np.uint8)).save(tmp_path / "a.jpg")
    proc = subprocess.run([sys.executable, "-m", "q2_wikiart_finetune.predict", "--weights", str(bvlc_v1),
                           "--images", str(tmp_path), "--out", str(tmp_path / "x.csv"), "--mean-value", "104",
                           "117", "123"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: {bvlc_v1} has no weights for layer(s) fc8_wikiart")
    assert not (tmp_path / "x.csv").exists()


# ---- settings: what make passes, what a missing file says ------------------------------------------------


def test_make_passes_the_files_you_have_and_the_download_settings():
    proc = subprocess.run(["make", "-n", "q1", "q2", "q3", "CIFAR10_ARCHIVE=/c.tar.gz", "WEIGHTS=/w.caffemodel",
                           "Q2_WORKERS=3", "Q2_TIMEOUT=7", "Q2_FROM_DIR=/art"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.replace("\\\n", " ").splitlines()  # join make's continued lines
    q1, q2, q3 = (next(line for line in lines if module in line)
                  for module in ("q1_dropout_augment.experiment", "q2_wikiart_finetune.experiment",
                                 "q3_visualize_break.run_notebooks"))
    assert "--archive /c.tar.gz" in q1
    for flag in ("--workers 3", "--timeout 7", "--from-dir /art", "--weights /w.caffemodel"):
        assert flag in q2
    assert "--weights /w.caffemodel" in q3


def test_q2_refuses_a_missing_weights_file_before_any_download(tmp_path):
    missing = tmp_path / "mine.caffemodel"
    proc = subprocess.run([sys.executable, "-m", "q2_wikiart_finetune.experiment", "--weights", str(missing)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: --weights {missing}: no such file. Fix: give the path of your .caffemodel "
                                   "(make q2 WEIGHTS=path), or leave it out to download BVLC AlexNet")
