"""A stand-in for Caffe's ILSVRC-2012 auxiliary archive `caffe_ilsvrc12.tar.gz`, in the real file's layout.

Where the layout comes from: Caffe's `data/ilsvrc12/get_ilsvrc_aux.sh` downloads
http://dl.caffe.berkeleyvision.org/caffe_ilsvrc12.tar.gz and unpacks it in place; the archive holds
eight regular files at its top level (no folder):
  det_synset_words.txt      the 200 detection synsets, "wnid name, synonyms" per line
  imagenet.bet.pickle       a Python 2 pickle of the synset hierarchy (used by Caffe's web demo)
  imagenet_mean.binaryproto the training-set mean, a BlobProto with the legacy dims 1x3x256x256, BGR
  synset_words.txt          the 1000 classes in output-unit order (sorted by wnid), "wnid name, synonyms"
  synsets.txt               the same 1000 wnids alone
  train.txt, val.txt, test.txt   image lists, "path label" per line (train paths are wnid/file.JPEG)

The class names here are the real ones at their real output indices for the classes the toolkit's
notebooks and tests name; the other lines are placeholders of the same form (wnids kept sorted). The
image lists are a few lines each (the real ones have 1.28 M / 50 k / 100 k). The mean has the real
dims and BGR channel means close to the real ones (104, 117, 123); its values are made up.
"""

import io
import pickle
import tarfile

import numpy as np

# (output index, wnid, synset words) of real ILSVRC-2012 classes
KNOWN_CLASSES = [
    (0, "n01440764", "tench, Tinca tinca"),
    (1, "n01443537", "goldfish, Carassius auratus"),
    (9, "n01518878", "ostrich, Struthio camelus"),
    (99, "n01855672", "goose"),
    (251, "n02110341", "dalmatian, coach dog, carriage dog"),
    (281, "n02123045", "tabby, tabby cat"),
    (282, "n02123159", "tiger cat"),
    (543, "n03255030", "dumbbell"),
    (945, "n07720875", "bell pepper"),
    (951, "n07749582", "lemon"),
    (968, "n07930864", "cup"),
    (999, "n15075141", "toilet tissue, toilet paper, bathroom tissue"),
]
MEAN_BGR = (104.0, 117.0, 123.0)


def synsets() -> list[tuple[str, str]]:
    """1000 (wnid, words) in output order: the known classes where they are, sorted placeholders between."""
    known = {i: (int(w[1:]), words) for i, w, words in KNOWN_CLASSES}
    anchors = sorted(known)
    out = []
    for i in range(1000):
        if i in known:
            number, words = known[i]
        else:  # interpolate between the neighbouring real wnids, so the list stays sorted like the real one
            lo = max(a for a in anchors if a < i)
            hi = min(a for a in anchors if a > i)
            number = known[lo][0] + (known[hi][0] - known[lo][0]) * (i - lo) // (hi - lo)
            words = f"placeholder class {i}"
        out.append((f"n{number:08d}", words))
    return out


def mean_blob_bytes(seed=0) -> bytes:
    """imagenet_mean.binaryproto: legacy num/channels/height/width = 1/3/256/256, float data (C, H, W) BGR."""
    from caffe.proto import caffe_pb2

    rng = np.random.default_rng(seed)
    mean = np.stack([np.full((256, 256), m, np.float32) + rng.normal(0, 8, (256, 256)).astype(np.float32)
                     for m in MEAN_BGR])
    blob = caffe_pb2.BlobProto(num=1, channels=3, height=256, width=256)
    blob.data.extend(mean.ravel().tolist())
    return blob.SerializeToString()


def members(seed=0) -> dict[str, bytes]:
    classes = synsets()
    words = "".join(f"{wnid} {name}\n" for wnid, name in classes)
    return {
        "det_synset_words.txt": "".join(f"n{2672831 + i:08d} detection class {i}\n" for i in range(200)).encode(),
        "imagenet.bet.pickle": pickle.dumps({"words": {}, "parents": {}}, protocol=2),  # not read by the toolkit
        "imagenet_mean.binaryproto": mean_blob_bytes(seed),
        "synset_words.txt": words.encode(),
        "synsets.txt": "".join(f"{wnid}\n" for wnid, _ in classes).encode(),
        "test.txt": b"ILSVRC2012_test_00000001.JPEG 0\nILSVRC2012_test_00000002.JPEG 0\n",
        "train.txt": b"n01440764/n01440764_10026.JPEG 0\nn01443537/n01443537_10007.JPEG 1\n",
        "val.txt": b"ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 970\n",
    }


def archive_bytes(seed=0, extra=None) -> bytes:
    """The .tar.gz, members at the top level in the real archive's order; `extra` adds (name, bytes) pairs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [*members(seed).items(), *(extra or [])]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
