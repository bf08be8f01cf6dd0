"""Predict with a fine-tuned net and write a Kaggle submission CSV.

    python -m q2_wikiart_finetune.predict --weights results/q2/finetune/final.caffemodel \\
        --images data/wikiart/val.txt --out results/q2/submission.csv [--oversample]

`--images` is a folder (every image in it, id = file name without extension) or a list file of
`path [label]` lines (paths relative to --root; by default the list's folder, or its images/ subfolder
where download_wikiart.py put them). With labels it also writes accuracy, per-class
accuracy and a confusion-matrix PNG beside the CSV. Centre crop by default; `--oversample` averages
the 10 crops (4 corners + centre, and their mirrors) like `caffe.Classifier`.
"""

import argparse
import csv
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools import paths
from tools.cli import exit_on
from tools.fileio import atomic_path, write_text
from tools.progress import progress_iter
from tools.transform import mean_bgr

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class Classifier:
    net: object
    transformer: object
    new_size: int
    crop: int
    output: str  # the probability blob


def load_classifier(deploy, weights, *, new_size, crop, mean, gpu=None, new_layers=(), checked=False) -> Classifier:
    """The deploy net with `weights` (checked to fit; `new_layers` may be missing from them: feature extraction
    runs the fine-tuning deploy with the pretrained weights, which lack the new last layer). `checked`: the
    caller has already checked these weights against this deploy (a run checks its pretrained file once)."""
    import caffe

    from tools import device
    from tools.transform import make_transformer

    for what, p in (("deploy prototxt", deploy), ("weights", weights)):
        if not Path(p).exists():
            raise FileNotFoundError(f"{what} {p} not found")
    try:
        device.select(gpu)  # refuses a GPU on a CPU-only build
    except device.DeviceError as e:
        from tools.caffe_runner import CaffeError

        raise CaffeError(str(e)) from None
    from tools.weights import load_checked_net

    if checked:
        net = caffe.Net(str(deploy), str(weights), caffe.TEST)
    else:
        net = load_checked_net(deploy, weights, new_layers=new_layers,
                               fix=f"give the weights trained with {deploy} (a snapshot of the same mode and class "
                                   "count)")
    shape = net.blobs["data"].data.shape
    if shape[2:] != (crop, crop):
        raise ValueError(f"{deploy} takes {shape[2]}x{shape[3]} inputs but crop is {crop}")
    t = make_transformer(shape, mean, raw_scale=255)  # HWC -> CHW, RGB -> BGR, 0..1 -> 0..255, minus the mean
    return Classifier(net, t, new_size, crop, net.outputs[-1])


def read_image(f):
    """One RGB float image in 0..1, as caffe.io.load_image reads it; a file it cannot read is named, and said why."""
    import caffe

    if Path(f).is_file() and Path(f).stat().st_size == 0:
        check_image(f)  # before skimage's readers, which probe every plugin they know on an empty file
    try:
        return caffe.io.load_image(str(f), color=True)
    except Exception as e:  # noqa: BLE001 - the readers behind skimage raise many kinds
        check_image(f)  # says what is wrong with the file, where skimage's readers give plugin advice
        raise ValueError(f"cannot read image {f}: {e}") from None


def resize(image, new_size):
    """An image from read_image resized to new_size x new_size as caffe.io.resize_image does it."""
    import caffe

    if image.shape[:2] == (new_size, new_size):
        # already that size (download_wikiart.py stores WikiArt at 256x256): resize_image would only rescale the values
        # to 0..1 and back, which changes them by at most one unit in the last place
        return image
    if image.shape[-1] == 3 and (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all():
        # a grey picture (load_image repeats it into 3 channels): the channels are resized alike (the same minimum and
        # maximum, a zoom of 1 across channels), so resizing one and repeating it gives the same values, a third of
        # the work
        return np.repeat(caffe.io.resize_image(image[..., :1], (new_size, new_size)), 3, axis=2)
    return caffe.io.resize_image(image, (new_size, new_size))


def load_image(f, new_size):
    """read_image(f), resized to new_size x new_size."""
    return resize(read_image(f), new_size)


def load_images(files, new_size):
    """RGB float images in 0..1, resized to new_size x new_size (load_image of each)."""
    return [load_image(f, new_size) for f in files]


def check_image(f):
    """ValueError naming `f` when it is not a whole, decodable image, by Pillow: caffe.io.load_image's
    readers answer an empty or damaged file with advice to install plugins."""
    from PIL import Image, UnidentifiedImageError

    fix = ("Fix: fetch it again (download_wikiart.py re-downloads images that are missing: move this one aside) "
           "or take it out of the list")
    try:
        size = Path(f).stat().st_size
    except OSError as e:
        raise ValueError(f"cannot read image {f}: {e.strerror}. {fix}") from None
    if size == 0:
        raise ValueError(f"image {f} is empty (0 bytes): a download or copy that failed. {fix}")
    try:
        with Image.open(f) as im:
            im.load()
    except UnidentifiedImageError:
        raise ValueError(f"image {f} ({size:,} bytes) is not an image format Pillow or OpenCV reads. {fix}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"image {f} ({size:,} bytes) cannot be decoded ({e}): it is damaged or cut short. "
                         f"{fix}") from None


def crops(images, crop, oversample):
    import caffe

    if oversample:
        return caffe.io.oversample(images, (crop, crop))  # 10 per image
    off = (images[0].shape[0] - crop) // 2
    return np.asarray([im[off:off + crop, off:off + crop] for im in images])


# Inputs per forward pass: 50 at AlexNet's 3x227x227, more for smaller inputs, in proportion (256 at most): fewer
# passes for a small net, whose per-pass costs (every layer's set-up and thread start) then weigh less. Measured with
# bench/q2_features.py and the demo's predictions: 50 vs 10 at 227 crops, 250 vs 50 at the demo's 99 crops.
BATCH_VALUES = 50 * 3 * 227 * 227
MAX_BATCH = 256
WORKERS = 1  # threads decoding the next batch while the net runs on this one


def preprocess_into(transformer, pictures, out, input_name="data"):
    """caffe.io.Transformer.preprocess of a whole batch of (H, W, C) pictures at once, written into `out` (N, C, H, W)
    (the data blob): the transformer's own settings applied by the same float32 operations in the same order
    (transpose, channel swap, raw scale, mean, input scale), so the values are the same, without a copy per image."""
    t = transformer
    x = np.asarray(pictures, dtype=np.float32)
    if x.shape[1:3] != tuple(t.inputs[input_name][2:]):
        raise ValueError(f"pictures of {x.shape[1]}x{x.shape[2]} for an input of "
                         f"{t.inputs[input_name][2]}x{t.inputs[input_name][3]}")
    transpose = t.transpose.get(input_name)
    if transpose is not None:
        x = x.transpose(0, *(axis + 1 for axis in transpose))
    swap = t.channel_swap.get(input_name)
    raw_scale = t.raw_scale.get(input_name)
    for dst, src in enumerate(swap if swap is not None else range(x.shape[1])):
        if raw_scale is not None:
            np.multiply(x[:, src], raw_scale, out=out[:, dst])
        else:
            out[:, dst] = x[:, src]
    mean = t.mean.get(input_name)
    if mean is not None:
        out -= mean
    input_scale = t.input_scale.get(input_name)
    if input_scale is not None:
        out *= input_scale
    return out


def last_writer(net, blob) -> str | None:
    """The last layer that writes `blob` (in-place ReLU and dropout on fc7 included): running the net to it gives
    the blob its final values. None when no layer writes it."""
    names = [name for name in net._layer_names if blob in net.top_names[name]]
    return names[-1] if names else None


def _loaded(files, new_size, batch, workers):
    """(start, [(image, decode s, resize s)]) per batch of `files`; with workers, the next batch is decoded in
    threads while the caller works on this one (JPEG decoding and numpy's arithmetic run without the GIL)."""
    def load(f):
        t0 = time.perf_counter()
        image = read_image(f)
        t1 = time.perf_counter()
        image = resize(image, new_size)
        return image, t1 - t0, time.perf_counter() - t1

    starts = range(0, len(files), batch)
    if workers < 1:
        for start in starts:
            yield start, [load(f) for f in files[start:start + batch]]
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
    try:
        pending = [pool.submit(load, f) for f in files[:batch]]
        for start in starts:
            done = [p.result() for p in pending]
            pending = [pool.submit(load, f) for f in files[start + batch:start + 2 * batch]]
            yield start, done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def batch_size(input_shape) -> int:
    """Inputs per forward pass for a net input of `input_shape` (N, C, H, W): see BATCH_VALUES."""
    return max(1, min(MAX_BATCH, BATCH_VALUES // int(np.prod(input_shape[1:]))))


def predict(clf: Classifier, files, *, oversample=False, mirror=False, batch=None, progress=True, blob=None,
            workers=WORKERS, stages=None) -> np.ndarray:
    """Class probabilities (N, classes), or the activations of `blob` (N, ...) for feature extraction.
    `mirror=True` runs the left-right mirror images instead; `mirror="both"`: the images, then their mirror images
    (2N rows), each image decoded once and its mirror image in the same forward pass (the cached-feature path
    stores both). Each forward pass takes about `batch` inputs (images, mirror images, crops; default: batch_size of
    the net's input); the next batch of images is decoded in `workers` threads meanwhile. The net runs only as far
    as `blob`'s last writer. `stages`: a dict that gets the seconds spent decoding, resizing, waiting for the
    decoder, transforming (crop, mean, layout) and in the net's forward pass."""
    files = list(files)
    both = mirror == "both"
    views = 2 if both else 1
    per_image = 10 if oversample else 1
    name = blob or clf.output
    end = last_writer(clf.net, name)
    data = clf.net.blobs["data"]
    out = None
    timing = dict.fromkeys(("decode", "resize", "wait", "transform", "forward"), 0.0)
    if both and oversample:
        raise ValueError("mirror='both' and oversample: the 10 crops include mirror images already")
    batch = max(1, (batch or batch_size(data.data.shape)) // (views * per_image))  # images per step
    loaded = progress_iter(_loaded(files, clf.new_size, batch, workers), total=-(-len(files) // batch),
                           desc="predict", unit="batch", enabled=progress)
    while True:
        t0 = time.perf_counter()
        start, done = next(loaded, (None, None))
        if start is None:
            break
        timing["wait"] += time.perf_counter() - t0  # the decoder's time not hidden behind the net's
        t0 = time.perf_counter()
        images = [d[0] for d in done]
        timing["decode"] += sum(d[1] for d in done)
        timing["resize"] += sum(d[2] for d in done)
        cropped = crops(images, clf.crop, oversample)
        if mirror is True:  # the crop mirrored, as Caffe's transform_param does it
            cropped = cropped[:, :, ::-1]
        n = len(cropped)
        shape = (n * views, *data.data.shape[1:])
        if data.data.shape != shape:
            data.reshape(*shape)
        preprocess_into(clf.transformer, cropped, data.data[:n])
        if both:  # the mirror image's input is the image's input mirrored (every step is per pixel)
            data.data[n:] = data.data[:n, :, :, ::-1]
        t1 = time.perf_counter()
        timing["transform"] += t1 - t0
        # to the blob's last writer, not forward(end=blob): in-place layers (relu7 on fc7) must run for a blob
        # to hold what the next layer sees
        clf.net.forward(end=end)
        result = clf.net.blobs[name].data
        k = len(images)
        result = result.reshape(views, k, per_image, *result.shape[1:]).mean(axis=2)
        if out is None:
            out = np.empty((views, len(files), *result.shape[2:]), np.float32)
        out[:, start:start + k] = result
        timing["forward"] += time.perf_counter() - t1
    if out is None:
        return np.empty((0,), np.float32)
    if stages is not None:
        for key, value in timing.items():
            stages[key] = stages.get(key, 0.0) + value
    return out.reshape(views * len(files), *out.shape[2:])


def list_root(list_file, entries) -> Path:
    """The folder a list's paths are relative to when none is given: the list's own folder, or its images/
    subfolder (download_wikiart.py writes data/wikiart/val.txt with paths relative to data/wikiart/images/)."""
    here = Path(list_file).parent
    for root in (here, here / "images"):
        if entries and (root / entries[0]).exists():
            return root
    return here


def read_list(list_file, root=None):
    """(files, labels or None) from `path [label]` lines; paths relative to `root` (default: `list_root`)."""
    list_file = Path(list_file)
    if root is None:
        firsts = [line.split()[0] for line in list_file.read_text().splitlines() if line.split()][:1]
        root = list_root(list_file, firsts)
    root = Path(root)
    files, labels = [], []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        files.append(root / parts[0])
        if len(parts) > 1:
            try:
                labels.append(int(parts[1]))
            except ValueError:
                raise ValueError(f"{list_file}:{n}: label '{parts[1]}' is not an integer") from None
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"{list_file} names {len(missing)} missing image(s), e.g. {missing[0]} "
                                f"(root {root}); fix the list or --root, or rerun the download")
    return files, (labels if len(labels) == len(files) else None)


def check_labels(list_file, labels, num_classes, weights=None):
    """ValueError naming the list file, the line and the allowed range for the first label outside
    0..num_classes-1 (a negative one included: numpy would count -1 as the last class)."""
    if labels is None:
        return
    lines = [n for n, line in enumerate(Path(list_file).read_text().splitlines(), 1) if line.split()]
    for n, label in zip(lines, labels, strict=True):
        if not 0 <= label < num_classes:
            net = f"{weights or 'the net'} has {num_classes} classes"
            raise ValueError(f"{list_file}:{n}: label {label} is outside 0..{num_classes - 1} ({net}); nothing was "
                             "written. Fix: labels are class indices counted from 0: correct the list, or give the "
                             "weights and deploy of a net with that many classes")


def gather(images, root=None):
    images = Path(images)
    if images.is_dir():
        files = sorted(f for f in images.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images in {images}")
        return files, None
    if not images.exists():
        raise FileNotFoundError(f"{images} is neither a folder of images nor a list file")
    return read_list(images, root)


def write_submission(path, ids, labels, columns=("id", "label")) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(zip(ids, labels, strict=True))
    return Path(path)


def evaluate(true, predicted, classes, out_prefix) -> dict:
    """Accuracy, per-class accuracy (markdown) and a confusion-matrix PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true, predicted = np.asarray(true), np.asarray(predicted)
    k = len(classes)
    confusion = np.zeros((k, k), int)
    np.add.at(confusion, (true, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    accuracy = float((true == predicted).mean())
    lines = [f"accuracy: {accuracy:.4f} on {len(true)} images", "", "| class | images | accuracy |", "|---|---|---|"]
    lines += [f"| {c} | {confusion[i].sum()} | {per_class[i]:.3f} |" for i, c in enumerate(classes)]
    write_text(f"{out_prefix}_accuracy.md", "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), classes, fontsize=7)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, confusion[i, j], ha="center", va="center", fontsize=6,
                    color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix, accuracy {accuracy:.3f}")
    fig.tight_layout()
    with atomic_path(f"{out_prefix}_confusion.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return {"accuracy": accuracy, "per_class": dict(zip(classes, per_class.tolist(), strict=True)),
            "confusion": confusion.tolist()}


def main(argv=None):
    from q2_wikiart_finetune.task import WIKIART

    task = WIKIART
    ap = argparse.ArgumentParser(prog="python -m q2_wikiart_finetune.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="trained .caffemodel")
    ap.add_argument("--images", required=True, help="a folder of images, or a list file of 'path [label]' lines")
    ap.add_argument("--out", required=True, help="submission CSV to write")
    ap.add_argument("--deploy", default=str(paths.REPO / task.path("finetune", "deploy.prototxt")))
    ap.add_argument("--root", help="folder the list's paths are relative to (default: the list's folder, or its "
                                   "images/ subfolder when the paths are there)")
    ap.add_argument("--mean-file", default=str(paths.DATA / "ilsvrc12" / "imagenet_mean.binaryproto"),
                    help="mean .binaryproto or .npy (default: the ImageNet mean that tools.get_ilsvrc_aux fetches)")
    ap.add_argument("--mean-value", type=float, nargs="+", help="per-channel BGR mean instead of a mean file")
    ap.add_argument("--new-size", type=int, default=task.new_size, help="resize before cropping (default 256)")
    ap.add_argument("--crop", type=int, default=task.crop, help="crop size (default 227)")
    ap.add_argument("--classes", help="label names, one per line (default: styles.txt beside a list file)")
    ap.add_argument("--oversample", action="store_true", help="average 10 crops per image")
    ap.add_argument("--id-column", default="id")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--gpu", default=None, help="GPU id (needs a CUDA build)")
    a = ap.parse_args(argv)
    # every failure, the outputs' included (a folder as --out, a folder without write permission, a full disk),
    # ends in one line; the outputs are written atomically, so a failed write leaves nothing half-written
    with exit_on(FileNotFoundError, ValueError):
        run(a)


def check_out(out) -> Path:
    """`--out` must name a file in a folder that can be written: said before any compute (a probe file is made
    and removed), so an hour of prediction is not lost to a typo or a read-only folder."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: give the submission's file name, e.g. {out / 'submission.csv'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:  # a temporary file beside it, removed: raises what writing the output would (EACCES, EROFS)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(out)) from None
    os.close(fd)
    os.unlink(probe)
    return out


def run(a):
    files, labels = gather(a.images, a.root)
    mean = mean_bgr(None if a.mean_value else a.mean_file, a.mean_value)
    clf = load_classifier(a.deploy, a.weights, new_size=a.new_size, crop=a.crop, mean=mean, gpu=a.gpu)
    # the labels against the net's classes before any compute and before any output is written
    check_labels(a.images, labels, clf.net.blobs[clf.output].data.shape[1], a.weights)
    check_out(a.out)
    probs = predict(clf, files, oversample=a.oversample)
    predicted = probs.argmax(axis=1)
    out = write_submission(a.out, [Path(f).stem for f in files], predicted.tolist(), (a.id_column, a.label_column))
    print(f"wrote {out} ({len(files)} predictions)")
    if labels is not None:
        names_file = Path(a.classes) if a.classes else Path(a.images).parent / "styles.txt"
        k = probs.shape[1]
        classes = names_file.read_text().splitlines()[:k] if names_file.exists() else [str(i) for i in range(k)]
        prefix = str(Path(a.out).with_suffix(""))
        result = evaluate(labels, predicted, classes, prefix)
        print(f"accuracy {result['accuracy']:.4f}; per class and confusion matrix: {prefix}_accuracy.md, "
              f"{prefix}_confusion.png")


if __name__ == "__main__":
    main()
