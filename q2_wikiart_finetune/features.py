"""The fast path: run the pretrained net once, store its fc7 features, train only the new last layer.

In feature-extractor mode every iteration still runs the whole frozen AlexNet forward; here the
frozen part runs once per image (twice with mirrored copies), and the classifier trains on the
stored features as a small Caffe net (task.features_net) in seconds. Its learned layer has the
full net's name and shape, so merge_classifier() turns it into weights for the ordinary deploy net.
"""

from pathlib import Path

import numpy as np

from q2_wikiart_finetune import predict
from q2_wikiart_finetune import task as tasks
from tools import caffe_runner, lmdb_io, paths, weights
from tools.fileio import atomic_path


def extract(task, pretrained, list_file, out_lmdb, *, mirror=False, gpu=None, repo=paths.REPO, progress=True) -> int:
    """Features of every image in `list_file` (and of its mirror image) into a float-Datum LMDB."""
    repo = Path(repo)
    deploy = tasks.write_deploy(task, repo)
    files, labels = predict.read_list(repo / list_file, repo / task.image_root)
    if labels is None:
        raise ValueError(f"{list_file} has no labels: the cached-feature path trains on labelled lists")
    mean = predict.mean_pixel(repo / task.mean_file if task.mean_file else None, task.mean_value)
    clf = predict.load_classifier(deploy, repo / pretrained, new_size=task.new_size, crop=task.crop, mean=mean, gpu=gpu,
                                  new_layers=[task.last_layer])
    feats = [predict.predict(clf, files, blob=task.feature_blob, progress=progress)]
    all_labels = list(labels)
    if mirror:
        feats.append(predict.predict(clf, files, mirror=True, blob=task.feature_blob, progress=progress))
        all_labels += labels
    features = np.concatenate(feats).reshape(len(all_labels), -1).astype(np.float32)
    order = np.random.RandomState(0).permutation(len(all_labels))  # the Data layer reads in key order
    lmdb_io.write_features(repo / out_lmdb, features[order], np.asarray(all_labels)[order])
    return len(all_labels)


def merge_classifier(task, pretrained, classifier_weights, out, repo=paths.REPO) -> Path:
    """Deploy weights: every pretrained layer, plus the last layer trained on cached features.
    Skipped while `out` is newer than both inputs (a rerun trains nothing new)."""
    import caffe

    out, repo = Path(out), Path(repo)
    inputs = max(Path(classifier_weights).stat().st_mtime, (repo / pretrained).stat().st_mtime)
    if out.exists() and out.stat().st_mtime >= inputs:
        return out
    deploy = repo / task.path("finetune", "deploy.prototxt")
    net = caffe.Net(str(deploy), str(repo / pretrained), caffe.TEST)  # the new layer starts from its filler
    params = weights.layer_params(classifier_weights, task.last_layer)
    for blob, value in zip(net.params[task.last_layer], params, strict=True):
        if blob.data.shape != value.shape:
            raise ValueError(f"{task.last_layer}: classifier weights {value.shape} do not fit {blob.data.shape}")
        blob.data[...] = value
    with atomic_path(out, suffix=".caffemodel") as tmp:
        net.save(str(tmp))
    return out


def run(task, *, pretrained=None, mirror=True, gpu=None, repo=paths.REPO, progress=True, folder=None):
    """Extract (once), train the classifier with the caffe binary, merge; returns (TrainResult, merged weights)."""
    repo = Path(repo)
    pretrained = pretrained or task.weights
    out = repo / task.results_dir / "cached_features"
    for split in ("train", "val"):
        lmdb = out / f"{split}_features_lmdb"
        if not (lmdb / "data.mdb").exists():
            n = extract(task, pretrained, f"{task.data_root}/{split}.txt", lmdb, mirror=mirror and split == "train",
                        gpu=gpu, repo=repo, progress=progress)
            print(f"[q2] stored {task.feature_blob} features of {n} {split} images in {lmdb.relative_to(repo)}")
    folder = folder or task.path("cached_features")
    tasks.write(task, "cached_features", repo, folder)
    result = caffe_runner.train(f"{folder}/solver.prototxt", out / "train.log", gpu=gpu, cwd=repo, progress=progress,
                                desc=f"{task.name}/cached_features")
    final = out / f"snap_iter_{result.final_iter}.caffemodel"
    merged = merge_classifier(task, pretrained, final, out / "merged.caffemodel", repo)
    return result, merged
