"""The fast path: run the pretrained net once, store its fc7 features, train only the new last layer.

In feature-extractor mode every iteration still runs the whole frozen AlexNet forward; here the
frozen part runs once per image (twice with mirrored copies), and the classifier trains on the
stored features as a small Caffe net (task.features_net) in seconds. Its learned layer has the
full net's name and shape, so merge_classifier() turns it into weights for the ordinary deploy net.

The stored features are a cache with a manifest (tools.lmdb_io): entry count, the SHA-256 of the
data, and what they were computed from (the list file's SHA-256, the pretrained weights' path, size and
date, the net's geometry and mean, mirroring). A cache that fails the check, or was computed from
anything else, is computed again.
"""

import hashlib
from pathlib import Path

import numpy as np

from q2_wikiart_finetune import predict
from q2_wikiart_finetune.task import write as write_mode
from q2_wikiart_finetune.task import write_deploy
from tools import caffe_runner, lmdb_io, paths, weights
from tools.fileio import atomic_path
from tools.transform import mean_bgr


def feature_source(task, pretrained, list_file, mirror, repo=paths.REPO) -> dict:
    """What a features LMDB depends on, as stored in (and compared with) its manifest."""
    repo = Path(repo)
    w = repo / pretrained
    st = w.stat()
    mean = list(task.mean_value) if task.mean_value is not None else None
    if mean is None and task.mean_file:
        m = (repo / task.mean_file).stat()
        mean = {"file": str((repo / task.mean_file).resolve()), "size": m.st_size, "mtime_ns": m.st_mtime_ns}
    return {"list": str(list_file), "list_sha256": hashlib.sha256((repo / list_file).read_bytes()).hexdigest(),
            "image_root": task.image_root, "weights": str(w.resolve()), "weights_size": st.st_size,
            "weights_mtime_ns": st.st_mtime_ns, "blob": task.feature_blob, "width": task.width,
            "new_size": task.new_size, "crop": task.crop, "mean": mean, "mirror": bool(mirror)}


def extraction_net(task, pretrained, *, gpu=None, repo=paths.REPO, checked=False) -> predict.Classifier:
    """The fine-tuning deploy with the pretrained weights (its new last layer keeps its filler, unused):
    what the features come from. `checked`: the run has checked `pretrained` against the deploy already."""
    repo = Path(repo)
    deploy = write_deploy(task, repo)
    mean = mean_bgr(repo / task.mean_file if task.mean_file else None, task.mean_value)
    return predict.load_classifier(deploy, repo / pretrained, new_size=task.new_size, crop=task.crop, mean=mean,
                                   gpu=gpu, new_layers=[task.last_layer], checked=checked)


def extract(task, pretrained, list_file, out_lmdb, *, mirror=False, gpu=None, repo=paths.REPO, progress=True,
            source=None, clf=None, stages=None) -> int:
    """Features of every image in `list_file` (and of its mirror image) into a float-Datum LMDB, its
    labels checked against the task's classes; `source` goes into the LMDB's manifest. `clf`: the
    extraction_net to use (default: loaded here); `stages`: see predict.predict."""
    repo = Path(repo)
    files, labels = predict.read_list(repo / list_file, repo / task.image_root)
    if labels is None:
        raise ValueError(f"{list_file} has no labels: the cached-feature path trains on labelled lists")
    clf = clf or extraction_net(task, pretrained, gpu=gpu, repo=repo)
    # each image decoded once; its mirror image (if asked for) goes through the net in the same batch
    features = predict.predict(clf, files, mirror="both" if mirror else False, blob=task.feature_blob,
                               progress=progress, stages=stages)
    all_labels = list(labels) * (2 if mirror else 1)
    features = features.reshape(len(all_labels), -1)
    order = np.random.RandomState(0).permutation(len(all_labels))  # the Data layer reads in key order
    lmdb_io.write_features(repo / out_lmdb, features[order], np.asarray(all_labels)[order],
                           num_classes=task.num_classes, source=source)
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


def extract_missing(task, pretrained, *, mirror, gpu, repo, progress, checked=False):
    """The train and val features, extracted where the cache does not pass its check (tools.lmdb_io)."""
    cache = repo / task.results_dir / "cached_features"  # where task.features_net reads them
    clf = None
    for split in ("train", "val"):
        lmdb = cache / f"{split}_features_lmdb"
        list_file = f"{task.data_root}/{split}.txt"
        flip = mirror and split == "train"
        source = feature_source(task, pretrained, list_file, flip, repo)
        images = sum(1 for line in (repo / list_file).read_text().splitlines() if line.split())
        try:
            lmdb_io.check(lmdb, entries=images * (2 if flip else 1), source=source, num_classes=task.num_classes)
            continue
        except lmdb_io.LmdbError as e:
            if (lmdb / "data.mdb").exists():
                print(f"[q2] cached features: {str(e).split('. Fix:')[0]}; extracting them again")
        # one extraction net for both splits, loaded (its weights checked unless the run did) when a cache is made
        clf = clf or extraction_net(task, pretrained, gpu=gpu, repo=repo, checked=checked)
        n = extract(task, pretrained, list_file, lmdb, mirror=flip, gpu=gpu, repo=repo, progress=progress,
                    source=source, clf=clf)
        print(f"[q2] stored {task.feature_blob} features of {n} {split} images in {lmdb.relative_to(repo)}")


def run(task, *, pretrained=None, mirror=True, gpu=None, repo=paths.REPO, progress=True, folder=None, run_dir=None,
        fresh=False, pretrained_checked=False):
    """Extract (when the cache does not pass its check), train the classifier with the caffe binary, merge;
    returns (TrainResult, merged weights). `run_dir` (relative to `repo`) gets the log, the snapshots and the
    merged weights; the solver in `folder` must snapshot there. `pretrained_checked`: the caller has checked
    the pretrained weights against the deploy (experiment.check_weights_fit), so they are not checked again."""
    repo = Path(repo)
    pretrained = pretrained or task.weights
    out = repo / (run_dir or f"{task.results_dir}/cached_features")
    extract_missing(task, pretrained, mirror=mirror, gpu=gpu, repo=repo, progress=progress, checked=pretrained_checked)
    folder = folder or task.path("cached_features")
    if run_dir is None:
        write_mode(task, "cached_features", repo, folder)
    result = caffe_runner.train(f"{folder}/solver.prototxt", out / "train.log", gpu=gpu, cwd=repo, progress=progress,
                                desc=f"{task.name}/cached_features", fresh=fresh)
    final = out / f"snap_iter_{result.final_iter}.caffemodel"
    merged = merge_classifier(task, pretrained, final, out / "merged.caffemodel", repo)
    return result, merged
