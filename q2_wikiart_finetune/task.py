"""A fine-tuning task: which images, which pretrained net, which sizes and schedule, and the prototxts
it generates (train_val, solver, deploy for each mode; the cached-feature classifier).

    WIKIART               the exercise: BVLC AlexNet -> 10 painting styles
    .venv/bin/python -m q2_wikiart_finetune.task --write     # regenerate the committed models/q2/ prototxts

The Fashion-MNIST transfer demo (q2_wikiart_finetune/transfer_demo.py) builds its own Task with a
reduced AlexNet (tools/alexnet.py), so both run through the same generators, runner and predictor.
Validation passes count every image once: the validation batch divides the image count.
"""

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as a program: quiet pycaffe's set-up log; glog reads this when caffe loads
    os.environ.setdefault("GLOG_minloglevel", "2")

import caffe
from caffe import layers as L
from caffe import params as P
from google.protobuf import text_format

from tools import alexnet
from tools.cli import exit_on
from tools.fileio import write_prototxts
from tools.solver import make_solver, solver_text

MODES = ("finetune", "feature_extractor", "cached_features")


@dataclass(frozen=True)
class Task:
    name: str
    data_root: str  # train.txt, val.txt, styles.txt (paths relative to the repo root)
    image_root: str  # ImageData root_folder: list entries are relative to it
    num_classes: int
    last_layer: str
    weights: str  # pretrained .caffemodel the fine-tuning starts from
    models_dir: str  # where the generated prototxts go
    results_dir: str  # logs, snapshots, plots
    width: float = 1.0
    new_size: int = 256
    crop: int = 227
    mean_file: str | None = None
    mean_value: tuple | None = None
    batch: int = 50
    val_batch: int = 50  # at most; the validation batch is the largest divisor of val_count up to this
    val_count: int = 387  # images in val.txt: test_iter x the validation batch counts each exactly once
    train_count: int = 1613
    base_lr: float = 0.001  # 10x lower than training AlexNet from scratch
    stepsize: int = 400  # from scratch: 100000
    max_iter: int = 1000
    test_interval: int = 100
    snapshot: int = 200
    feature_blob: str = "fc7"
    feature_max_iter: int = 2000  # the cached-feature classifier is cheap: many more iterations
    feature_lr: float = 0.01  # its base_lr (it is the only layer, so no 10x boost)
    extractor_lr: float | None = None  # base_lr of feature_extractor mode (default: base_lr)
    seed: int = 1  # the solver's random_seed: the new layer's fillers, the data order, crops, mirrors, dropout

    def path(self, *parts) -> str:
        return "/".join([self.models_dir, *parts])

    def val_batch_size(self, count=None) -> int:
        """The validation batch: the largest divisor of the image count up to `val_batch`, so that test_iter
        batches see every image exactly once (ImageData and Data wrap around: 8 x 50 over 387 images would
        count 13 of them twice)."""
        count = count or self.val_count
        return max(d for d in range(1, min(self.val_batch, count) + 1) if count % d == 0)

    def test_iter(self, count=None) -> int:
        count = count or self.val_count
        return count // self.val_batch_size(count)


WIKIART = Task(
    name="wikiart", data_root="data/wikiart", image_root="data/wikiart/images/", num_classes=10,
    last_layer="fc8_wikiart", weights="models/bvlc_alexnet/bvlc_alexnet.caffemodel", models_dir="models/q2",
    results_dir="results/q2", mean_file="data/ilsvrc12/imagenet_mean.binaryproto",
    # `-i 2000 -s 761218`, the exercise's subset, has 1,613 train and 387 val rows in the course index
)


def train_val(task: Task, mode: str):
    return alexnet.train_val(
        f"{task.data_root}/train.txt", f"{task.data_root}/val.txt", num_classes=task.num_classes,
        last_layer=task.last_layer, mode=mode, width=task.width, new_size=task.new_size, crop=task.crop,
        batch_size=task.batch, val_batch_size=task.val_batch_size(), root_folder=task.image_root,
        mean_file=task.mean_file, mean_value=task.mean_value, name=f"AlexNet-{task.name}-{mode}")


def deploy(task: Task, batch_size=10):
    return alexnet.deploy(num_classes=task.num_classes, last_layer=task.last_layer, width=task.width,
                          crop=task.crop, batch_size=batch_size, name=f"AlexNet-{task.name}-deploy")


def features_dim(task: Task) -> int:
    return alexnet.scaled(alexnet.FC, task.width)


def features_net(task: Task):
    """The cached-feature classifier: stored fc7 features -> the new last layer -> loss.

    Its layer has the same name and shape as the full net's, so the learned weights drop straight
    into the deploy net (see features.merge_classifier).
    """
    n = caffe.NetSpec()
    n.data, n.label = L.Data(source=f"{task.results_dir}/cached_features/train_features_lmdb", backend=P.Data.LMDB,
                             batch_size=task.batch, ntop=2, include=dict(phase=caffe.TRAIN))
    train_input = n.to_proto()
    n = caffe.NetSpec()
    n.data, n.label = L.Data(source=f"{task.results_dir}/cached_features/val_features_lmdb", backend=P.Data.LMDB,
                             batch_size=task.val_batch_size(), ntop=2, include=dict(phase=caffe.TEST))
    # the features were stored after fc7's ReLU, before dropout: apply dropout here as the full net does
    n.drop7 = L.Dropout(n.data, dropout_ratio=0.5, in_place=True)
    scores = alexnet.classifier(n.drop7, task.num_classes, task.last_layer, boost=False)
    setattr(n, task.last_layer, scores)
    n.accuracy = L.Accuracy(scores, n.label, include=dict(phase=caffe.TEST))
    n.loss = L.SoftmaxWithLoss(scores, n.label)
    net = n.to_proto()
    net.layer.insert(0, train_input.layer[0])
    net.name = f"{task.name}-cached-{task.feature_blob}-classifier"
    return net


def solver(task: Task, mode: str, folder: str):
    if mode == "cached_features":
        lr, stepsize, max_iter, interval, snapshot = task.feature_lr, max(1, task.feature_max_iter // 2), \
            task.feature_max_iter, max(1, task.feature_max_iter // 10), task.feature_max_iter
    else:
        lr = task.extractor_lr if mode == "feature_extractor" and task.extractor_lr else task.base_lr
        stepsize, max_iter, interval, snapshot = task.stepsize, task.max_iter, task.test_interval, task.snapshot
    return make_solver(
        net=f"{folder}/train_val.prototxt", test_iter=[task.test_iter()], test_interval=interval,
        test_initialization=True, base_lr=lr, lr_policy="step", gamma=0.1, stepsize=stepsize,
        momentum=0.9, weight_decay=5e-4, max_iter=max_iter, display=max(1, min(20, max_iter // 50)),
        snapshot=snapshot, snapshot_prefix=f"{task.results_dir}/{mode}/snap", random_seed=task.seed,
        solver_mode="CPU")


def files(task: Task, mode: str, folder=None) -> dict[str, str]:
    """The prototxts of one mode, as text; `deploy.prototxt` goes with the fine-tuning modes."""
    folder = folder or task.path(mode)
    net = features_net(task) if mode == "cached_features" else train_val(task, mode)
    out = {"train_val.prototxt": text_format.MessageToString(net),
           "solver.prototxt": solver_text(solver(task, mode, folder))}
    if mode != "cached_features":
        out["deploy.prototxt"] = text_format.MessageToString(deploy(task))
    return out


def write(task: Task, mode: str, repo, folder=None) -> Path:
    """Write one mode's prototxts into repo/folder (default task.models_dir/mode); unchanged files stay."""
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
    folder = folder or task.path(mode)
    write_prototxts(files(task, mode, folder), Path(repo) / folder)
    return Path(repo) / folder


def write_deploy(task: Task, repo) -> Path:
    """Only the deploy net (it depends on no image counts), where every mode's evaluation finds it."""
    [path] = write_prototxts({"deploy.prototxt": deploy(task)}, Path(repo) / task.path("finetune"))
    return path


def with_counts(task: Task, train_count: int, val_count: int) -> Task:
    return dataclasses.replace(task, train_count=train_count, val_count=val_count)


def main(argv=None):
    from tools import paths

    ap = argparse.ArgumentParser(prog="python -m q2_wikiart_finetune.task",
                                 description="Write Q2's train_val/solver/deploy prototxts under models/q2/.")
    ap.add_argument("--write", action="store_true", help="(re)generate the committed prototxts")
    a = ap.parse_args(argv)
    if not a.write:
        ap.print_help()
        return
    with exit_on():
        for mode in MODES:
            print(write(WIKIART, mode, paths.REPO))


if __name__ == "__main__":
    main()
