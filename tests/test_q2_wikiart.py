"""Q2's WikiArt path end to end against local servers: the downloader, Caffe's ILSVRC aux archive in its
real layout (a 1x3x256x256 legacy mean), pretrained weights in the BVLC file's 2014 V1 format whose last
layer is ImageNet's 1000-way fc8, every mode trained with the real binary, evaluated and summarised. The
net is AlexNet at a quarter width on 99x99 crops of the 256x256 images, so it runs in seconds."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import caffe
import pytest
from conftest import REPO
from http_fixtures import FileServer
from real_formats import ilsvrc_aux
from real_formats.bvlc_alexnet import legacy_shapes, write_v1_alexnet
from test_download_wikiart import make_rows, write_index

from q2_wikiart_finetune import experiment
from q2_wikiart_finetune.task import MODES, WIKIART, with_counts
from tools import alexnet, weights


@pytest.mark.slow
def test_wikiart_modes_end_to_end(tmp_path, monkeypatch):
    repo = tmp_path
    with FileServer() as server:
        rows = make_rows(server, 60)  # 6 paintings per style, every 4th in the index's test split
        index = write_index(tmp_path / "wikiart.csv.gz", rows)
        aux = server.add("/caffe_ilsvrc12.tar.gz", ilsvrc_aux.archive_bytes())
        down = subprocess.run([sys.executable, "q2_wikiart_finetune/download_wikiart.py", "-s", "3", "-i", "-1",
                               "-w", "8", "--index", str(index), "--out", str(repo / "data/wikiart"),
                               "--resize", "256x256"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert "Writing train/val for 60 successfully downloaded images." in down.stdout
        got = subprocess.run([sys.executable, "-m", "tools.get_ilsvrc_aux", "--url", aux, "--out",
                              str(repo / "data/ilsvrc12")], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr

    # "pretrained" weights as bvlc_alexnet.caffemodel is: V1 layers, legacy shapes, 1000-way fc8 (reduced width)
    imagenet = tmp_path / "imagenet_deploy.prototxt"
    imagenet.write_text(str(alexnet.deploy(num_classes=1000, width=0.25, crop=99)))
    shapes = legacy_shapes(caffe.Net(str(imagenet), caffe.TEST))
    assert shapes["fc8"] == [(1, 1, 1000, 1024), (1, 1, 1, 1000)]
    write_v1_alexnet(repo / "models/bvlc_alexnet/bvlc_alexnet.caffemodel", shapes=shapes)

    counts = [experiment.count_lines(repo / f"data/wikiart/{split}.txt") for split in ("train", "val")]
    assert counts == [45, 15]
    small = dataclasses.replace(with_counts(WIKIART, *counts), width=0.25, new_size=256, crop=99, batch=10,
                                val_batch=15, max_iter=4, stepsize=2, test_interval=2, snapshot=4, feature_max_iter=6)
    read_shapes, checked = weights.param_shapes, []  # what check_fits reads a weights file with
    monkeypatch.setattr(weights, "param_shapes", lambda path: checked.append(Path(path).name) or read_shapes(path))
    metrics = experiment.run(small, repo=repo, progress=False)
    assert set(metrics) == set(MODES)
    # once up front (experiment.check_weights_fit); caffe_runner.train's `-weights` runs (finetune,
    # feature_extractor) and the cached-feature extraction net take it as checked
    assert checked.count("bvlc_alexnet.caffemodel") == 1, checked
    out = repo / "results/q2"
    summary = (out / "summary.md").read_text()
    for mode in MODES:
        assert f"| {mode} |" in summary
        # non-default settings: each mode trains in a folder of its own, named by a hash of its settings
        run_dir = repo / metrics[mode]["run_dir"]
        assert run_dir.parent == out and run_dir.name.startswith(f"{mode}-"), run_dir
        assert (run_dir / "val_confusion.png").exists()
        shared = {"train_features_lmdb", "val_features_lmdb"}  # the feature cache, checked by its manifest
        assert not (out / mode).exists() or {p.name for p in (out / mode).iterdir()} <= shared
    assert "Post-Impressionism" in summary, "per-class accuracy names the styles"
    assert (out / "train_loss_vs_iter.png").exists() and (out / "val_accuracy_vs_iter.png").exists()
    rows = (out / "submission.csv").read_text().splitlines()
    assert rows[0] == "id,label" and len(rows) == 16
    # non-default settings: the committed models/q2 prototxts were not touched, results/ got its own
    solver = out / "models" / Path(metrics["finetune"]["run_dir"]).name / "solver.prototxt"
    assert f'snapshot_prefix: "{metrics["finetune"]["run_dir"]}/snap"' in solver.read_text()
    assert not (repo / "models/q2/finetune/solver.prototxt").exists()
    # a second run trains nothing
    checked.clear()
    again = experiment.run(small, repo=repo, progress=False)
    assert checked.count("bvlc_alexnet.caffemodel") == 1, checked  # nothing trained or extracted: the one check
    assert {m: v["accuracy"] for m, v in again.items()} == {m: v["accuracy"] for m, v in metrics.items()}
