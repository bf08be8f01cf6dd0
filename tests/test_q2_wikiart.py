"""Q2's WikiArt path end to end against local servers: the downloader, the ImageNet mean, pretrained
weights whose last layer is ImageNet's fc8, every mode trained with the real binary, evaluated and
summarised. The net is AlexNet at a quarter width on 99x99 crops so it runs in seconds."""

import dataclasses
import io
import subprocess
import sys
import tarfile

import caffe
import numpy as np
from conftest import REPO
from http_fixtures import FileServer
from test_download_wikiart import make_rows, write_index

from q2_wikiart_finetune import alexnet, experiment
from q2_wikiart_finetune import task as tasks
from tools import lmdb_io


def ilsvrc_aux_archive(size, tmp_path) -> bytes:
    """caffe_ilsvrc12.tar.gz's layout: a mean BlobProto (here of the reduced net's input size) and labels."""
    mean = np.stack([np.full((size, size), v, np.float32) for v in (104.0, 117.0, 123.0)])
    blob = lmdb_io.write_binaryproto(mean, tmp_path / "mean.binaryproto").read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("imagenet_mean.binaryproto", blob),
                           ("synset_words.txt", b"".join(b"n%08d class %d\n" % (i, i) for i in range(1000)))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_wikiart_modes_end_to_end(tmp_path):
    repo = tmp_path
    with FileServer() as server:
        rows = make_rows(server, 60)  # 6 paintings per style, every 4th in the index's test split
        index = write_index(tmp_path / "wikiart.csv.gz", rows)
        aux = server.add("/caffe_ilsvrc12.tar.gz", ilsvrc_aux_archive(112, tmp_path))
        down = subprocess.run([sys.executable, "q2_wikiart_finetune/download_wikiart.py", "-s", "3", "-i", "-1",
                               "-w", "8", "--index", str(index), "--out", str(repo / "data/wikiart"),
                               "--resize", "256x256"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert "Writing train/val for 60 successfully downloaded images." in down.stdout
        got = subprocess.run([sys.executable, "-m", "tools.get_ilsvrc_aux", "--url", aux, "--out",
                              str(repo / "data/ilsvrc12")], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr

    # "pretrained" weights with ImageNet's 1000-way fc8, like bvlc_alexnet.caffemodel
    imagenet = tmp_path / "imagenet_deploy.prototxt"
    imagenet.write_text(str(alexnet.deploy(num_classes=1000, width=0.25, crop=99)))
    weights = repo / "models/bvlc_alexnet/bvlc_alexnet.caffemodel"
    weights.parent.mkdir(parents=True)
    caffe.Net(str(imagenet), caffe.TEST).save(str(weights))

    counts = [experiment.count_lines(repo / f"data/wikiart/{split}.txt") for split in ("train", "val")]
    assert counts == [45, 15]
    small = dataclasses.replace(tasks.with_counts(tasks.WIKIART, *counts), width=0.25, new_size=112, crop=99, batch=10,
                                val_batch=15, max_iter=4, stepsize=2, test_interval=2, snapshot=4, feature_max_iter=6)
    metrics = experiment.run(small, repo=repo, progress=False)
    assert set(metrics) == set(tasks.MODES)
    out = repo / "results/q2"
    summary = (out / "summary.md").read_text()
    for mode in tasks.MODES:
        assert f"| {mode} |" in summary
        assert (out / mode / "val_confusion.png").exists()
    assert "Post-Impressionism" in summary, "per-class accuracy names the styles"
    assert (out / "train_loss_vs_iter.png").exists() and (out / "val_accuracy_vs_iter.png").exists()
    rows = (out / "submission.csv").read_text().splitlines()
    assert rows[0] == "id,label" and len(rows) == 16
    # non-default settings: the committed models/q2 prototxts were not touched, results/ got its own
    assert (out / "models/finetune/solver.prototxt").exists()
    assert not (repo / "models/q2/finetune/solver.prototxt").exists()
    # a second run trains nothing
    again = experiment.run(small, repo=repo, progress=False)
    assert {m: v["accuracy"] for m, v in again.items()} == {m: v["accuracy"] for m, v in metrics.items()}
