"""Q1's nets with `caffe.NetSpec`: the two-layer ConvNet and its regularised variants.

    conv 32x7x7 "same" -> ReLU -> max pool 2x2/2 -> [Dropout 0.5] -> fully connected -> softmax loss

Variants: baseline, dropout, augment (mirror + random crop in TRAIN, centre crop in TEST), their
combination, and dropout_augment_rta, which adds random rotation/shear/scale/perspective warps
(a Python layer, q1_dropout_augment/warp_layer.py) in the spirit of caffe-rta. Every variant subtracts
the training subset's mean image and scales pixels by 1/255, so the variants differ only in the
regulariser. Two TEST nets, run every `test_interval` iterations, measure validation (stage "val": a
fixed class-stratified sample of the validation set, cheap enough for a finely sampled curve) and
training accuracy (stage "train_subset") the same way; a third input (stage "val_full") reads the
whole validation set, which the experiment runs once through the final weights.

    .venv/bin/python -m q1_dropout_augment.nets --write      # regenerate models/q1/<dataset>/<variant>/
"""

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as a program: quiet pycaffe's set-up log; glog reads this when caffe loads
    os.environ.setdefault("GLOG_minloglevel", "2")

import caffe
from caffe import layers as L
from caffe import params as P
from google.protobuf import text_format

from tools.cli import exit_on
from tools.fileio import write_prototxts
from tools.solver import make_solver, solver_text

VARIANTS = ("baseline", "dropout", "augment", "dropout_augment", "dropout_augment_rta")
WARP = dict(rotation=12.0, shear=0.12, scale=(0.9, 1.1), perspective=0.06, seed=1)


@dataclass(frozen=True)
class DataSpec:
    """Where a prepared dataset lives (paths relative to the repo root) and its geometry."""

    name: str
    size: int  # images are size x size
    channels: int
    num_classes: int
    crop: int  # TRAIN random crop / TEST centre crop of the augmented variants
    train_count: int  # images in the training subset
    val_count: int  # the whole validation set: the final numbers
    max_iter: int
    test_interval: int
    val_sample_count: int = 1000  # the fixed validation sample tested every test_interval: the curve

    @property
    def root(self):
        return f"data/q1/{self.name}"


# Defaults measured on 2 cores (see README, Q1): 100 images per class, the full test set as validation
# (tested once at the end), 41 points of the validation curve on a 1,000-image sample of it.
DATASETS = {
    "fashion-mnist": DataSpec("fashion-mnist", 28, 1, 10, crop=26, train_count=1000, val_count=10000,
                              max_iter=2000, test_interval=50),
    "cifar10": DataSpec("cifar10", 32, 3, 10, crop=28, train_count=1000, val_count=10000,
                        max_iter=3000, test_interval=75),
}
BATCH, TEST_BATCH = 50, 100


def flags(variant):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant '{variant}': choose one of {', '.join(VARIANTS)}")
    return "dropout" in variant, "augment" in variant, variant.endswith("_rta")


def transform(spec: DataSpec, augment: bool, train: bool) -> dict:
    t = dict(mean_file=f"{spec.root}/train_subset_mean.binaryproto", scale=1 / 255)
    if augment:
        if spec.crop >= spec.size:
            raise ValueError(f"crop_size {spec.crop} must be smaller than the {spec.size}x{spec.size} images")
        t.update(crop_size=spec.crop, mirror=train)  # Caffe mirrors in TEST too if asked: TRAIN only
    return t


def data_layer(source, batch, transform_param, phase, stage=None):
    include = dict(phase=phase, stage=stage) if stage else dict(phase=phase)
    return L.Data(source=source, backend=P.Data.LMDB, batch_size=batch, ntop=2,
                  transform_param=transform_param, include=include)


def convnet(n, data, label, num_classes, dropout):
    """The two-layer ConvNet on `data`; scores in n.fc."""
    n.conv1 = L.Convolution(data, num_output=32, kernel_size=7, stride=1, pad=3,  # pad 3: "same" for 7x7
                            weight_filler=dict(type="msra"), bias_filler=dict(type="constant", value=0))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    if dropout:  # on the pooled features, right before the layer that holds almost all parameters
        n.drop1 = L.Dropout(n.pool1, dropout_ratio=0.5, in_place=True)
    n.fc = L.InnerProduct(n.pool1, num_output=num_classes, weight_filler=dict(type="xavier"),
                          bias_filler=dict(type="constant", value=0))
    return n.fc


def train_val(spec: DataSpec, variant: str):
    dropout, augment, rta = flags(variant)
    n = caffe.NetSpec()
    n.data, n.label = data_layer(f"{spec.root}/train_subset_lmdb", BATCH, transform(spec, augment, True), caffe.TRAIN)
    if rta:
        n.warp = L.Python(n.data, module="q1_dropout_augment.warp_layer", layer="RandomWarp",
                          param_str=json.dumps(WARP), in_place=True, include=dict(phase=caffe.TRAIN))
    scores = convnet(n, n.data, n.label, spec.num_classes, dropout)
    n.accuracy = L.Accuracy(scores, n.label, include=dict(phase=caffe.TEST))
    n.loss = L.SoftmaxWithLoss(scores, n.label)
    net = n.to_proto()
    net.name = f"q1-{spec.name}-{variant}"
    # TEST inputs after the TRAIN one: the validation sample, the training subset seen the TEST way (the
    # solver's two test nets), and the whole validation set (the final pass).
    for i, (stage, source) in enumerate((("val", "val_sample_lmdb"), ("train_subset", "train_subset_lmdb"),
                                         ("val_full", "val_lmdb"))):
        t = caffe.NetSpec()
        t.data, t.label = data_layer(f"{spec.root}/{source}", TEST_BATCH, transform(spec, augment, False),
                                     caffe.TEST, stage)
        net.layer.insert(1 + i, t.to_proto().layer[0])
    return net


def deploy(spec: DataSpec, variant: str):
    dropout, augment, _ = flags(variant)
    size = spec.crop if augment else spec.size
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, spec.channels, size, size]))
    n.prob = L.Softmax(convnet(n, n.data, None, spec.num_classes, dropout))
    net = n.to_proto()
    net.name = f"q1-{spec.name}-{variant}-deploy"
    return net


def default_folder(spec: DataSpec, variant: str) -> str:
    """Where the committed prototxts of a variant live, relative to the repo root."""
    return f"models/q1/{spec.name}/{variant}"


def default_run_folder(spec: DataSpec, variant: str) -> str:
    """Where a variant's snapshots and log go with the default settings (what the committed solvers say)."""
    return f"results/q1/{spec.name}/{variant}"


def solver(spec: DataSpec, variant: str, folder: str, run_folder: str | None = None):
    """The solver; `folder` (relative to the repo root) holds train_val.prototxt, `run_folder` gets the
    snapshots (default: default_run_folder; runs with other settings have their own)."""
    return make_solver(
        net=f"{folder}/train_val.prototxt",
        test_state=[{"stage": ["val"]}, {"stage": ["train_subset"]}],
        test_iter=[-(-spec.val_sample_count // TEST_BATCH), -(-spec.train_count // TEST_BATCH)],  # whole sets
        test_interval=spec.test_interval, test_initialization=True,
        # a tenfold lower rate for the last third lets the regularised variants settle
        base_lr=0.01, momentum=0.9, weight_decay=5e-4, lr_policy="step", gamma=0.1,
        stepsize=max(1, spec.max_iter * 2 // 3),  # 0 would make Caffe divide by zero (SIGFPE)
        max_iter=spec.max_iter, display=20,
        snapshot=1000, snapshot_prefix=f"{run_folder or default_run_folder(spec, variant)}/snap",
        random_seed=1, solver_mode="CPU",
    )


def files(spec: DataSpec, variant: str, folder: str, run_folder: str | None = None) -> dict[str, str]:
    """The three prototxts of a variant, as text, keyed by file name."""
    return {
        "train_val.prototxt": text_format.MessageToString(train_val(spec, variant)),
        "solver.prototxt": solver_text(solver(spec, variant, folder, run_folder)),
        "deploy.prototxt": text_format.MessageToString(deploy(spec, variant)),
    }


def write(spec: DataSpec, variant: str, repo, folder=None, run_folder=None) -> Path:
    """Write a variant's prototxts into repo/folder (default: the committed models/q1/<dataset>/<variant>),
    snapshots going to `run_folder`; unchanged files are left alone."""
    folder = folder or default_folder(spec, variant)
    write_prototxts(files(spec, variant, folder, run_folder), Path(repo) / folder)
    return Path(repo) / folder


def main(argv=None):
    from tools import paths

    ap = argparse.ArgumentParser(prog="python -m q1_dropout_augment.nets",
                                 description="Write Q1's train_val/solver/deploy prototxts under models/q1/.")
    ap.add_argument("--write", action="store_true", help="(re)generate the committed prototxts")
    ap.add_argument("--dataset", choices=sorted(DATASETS), nargs="*", default=sorted(DATASETS))
    a = ap.parse_args(argv)
    if not a.write:
        ap.print_help()
        return
    with exit_on():
        for name in a.dataset:
            for variant in VARIANTS:
                print(write(DATASETS[name], variant, paths.REPO))


if __name__ == "__main__":
    main()
