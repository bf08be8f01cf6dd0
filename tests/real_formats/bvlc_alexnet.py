"""A stand-in for the BVLC model zoo's `bvlc_alexnet.caffemodel`, in the format of the real 2014 file.

Where the layout comes from:
  - Caffe's `src/caffe/proto/caffe.proto`: the real file is a binary `NetParameter` whose layers are in
    the deprecated field `layers` (number 2, `V1LayerParameter`, with the `LayerType` enum: CONVOLUTION,
    RELU, LRN, POOLING, INNER_PRODUCT, DROPOUT, DATA, SOFTMAX_LOSS), learning-rate multipliers in
    `blobs_lr` / `weight_decay`, and blobs (`BlobProto`) that give their shape in the legacy fields
    `num`/`channels`/`height`/`width` (1-4), counted from the end: a bias of 96 is 1x1x1x96 and an
    inner product's weights are 1x1xOUTxIN; `data` (5) is a packed float array.
  - BVLC's `models/bvlc_alexnet/train_val.prototxt` as of 2014 (V1 syntax): the layer names and sizes,
    grouped conv2/conv4/conv5, and the TRAIN net the solver snapshotted (DATA layer first, SOFTMAX_LOSS
    last, no ACCURACY layer, which is TEST only).
  - `models/bvlc_alexnet/readme.md`: 1000-way fc8, about 233 MB (61 million float weights).

The values are random (the real ones cannot be downloaded here); the shapes, names, field numbers and
legacy dims are the real file's. Blob data is written as packed bytes, which protobuf merges at
memory speed, so the full-size file takes a second or two to build.
"""

from pathlib import Path

import numpy as np

# (name, V1 type, bottom, top, params) in the order of the 2014 train_val.prototxt's TRAIN net.
# Learnable layers give (num_output, kernel, stride, pad, group, bias_value) or (num_output,) for fc.
CONV = {
    "conv1": (96, 11, 4, 0, 1, 0.0),
    "conv2": (256, 5, 1, 2, 2, 0.1),
    "conv3": (384, 3, 1, 1, 1, 0.0),
    "conv4": (384, 3, 1, 1, 2, 0.1),
    "conv5": (256, 3, 1, 1, 2, 0.1),
}
FC = {"fc6": 4096, "fc7": 4096, "fc8": 1000}

# The legacy 4-field shapes of the real file's blobs: [weights, bias] per layer.
LEGACY_SHAPES = {
    "conv1": [(96, 3, 11, 11), (1, 1, 1, 96)],
    "conv2": [(256, 48, 5, 5), (1, 1, 1, 256)],
    "conv3": [(384, 256, 3, 3), (1, 1, 1, 384)],
    "conv4": [(384, 192, 3, 3), (1, 1, 1, 384)],
    "conv5": [(256, 192, 3, 3), (1, 1, 1, 256)],
    "fc6": [(1, 1, 4096, 9216), (1, 1, 1, 4096)],
    "fc7": [(1, 1, 4096, 4096), (1, 1, 1, 4096)],
    "fc8": [(1, 1, 1000, 4096), (1, 1, 1, 1000)],
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def legacy_blob(pb2, values: np.ndarray, legacy_shape):
    """A BlobProto as Caffe wrote it in 2014: num/channels/height/width and packed float data (field 5)."""
    blob = pb2.BlobProto()
    blob.num, blob.channels, blob.height, blob.width = legacy_shape  # set explicitly: has_num() is true
    raw = np.ascontiguousarray(values, "<f4").tobytes()
    blob.MergeFromString(b"\x2a" + _varint(len(raw)) + raw)  # tag 5, wire type 2 (length-delimited, packed)
    return blob


def v1_alexnet(shapes=LEGACY_SHAPES, seed=0, scale=0.01):
    """The NetParameter of the real file, with random values of the real shapes."""
    from caffe.proto import caffe_pb2 as pb2

    V1 = pb2.V1LayerParameter
    rng = np.random.default_rng(seed)
    net = pb2.NetParameter(name="AlexNet")

    def layer(name, kind, bottoms, tops):
        lay = net.layers.add(name=name, type=kind)
        lay.bottom.extend(bottoms)
        lay.top.extend(tops)
        return lay

    data = layer("data", V1.DATA, [], ["data", "label"])
    data.include.add(phase=pb2.TRAIN)
    data.data_param.source = "examples/imagenet/ilsvrc12_train_lmdb"
    data.data_param.backend = pb2.DataParameter.LMDB
    data.data_param.batch_size = 256
    data.transform_param.mirror = True
    data.transform_param.crop_size = 227
    data.transform_param.mean_file = "data/ilsvrc12/imagenet_mean.binaryproto"

    def learnable(lay, name):
        lay.blobs_lr.extend([1, 2])
        lay.weight_decay.extend([1, 0])
        for shape in shapes[name]:
            lay.blobs.append(legacy_blob(pb2, rng.standard_normal(int(np.prod(shape)), np.float32) * scale, shape))

    def lrn(name, bottom):
        lay = layer(name, V1.LRN, [bottom], [name])
        lay.lrn_param.local_size, lay.lrn_param.alpha, lay.lrn_param.beta = 5, 0.0001, 0.75

    def pool(name, bottom):
        lay = layer(name, V1.POOLING, [bottom], [name])
        lay.pooling_param.pool = pb2.PoolingParameter.MAX
        lay.pooling_param.kernel_size, lay.pooling_param.stride = 3, 2

    previous = "data"
    for name, (_, kernel, stride, pad, group, bias) in CONV.items():
        conv = layer(name, V1.CONVOLUTION, [previous], [name])
        p = conv.convolution_param
        p.num_output = shapes[name][0][0]  # reduced stand-ins differ from CONV
        # optional scalars in 2014's caffe.proto, repeated (same field numbers, same bytes) today
        p.kernel_size.append(kernel)
        p.stride.append(stride)
        if pad:
            p.pad.append(pad)
        if group > 1:
            p.group = group
        p.weight_filler.type, p.weight_filler.std = "gaussian", 0.01
        p.bias_filler.type, p.bias_filler.value = "constant", bias
        learnable(conv, name)
        n = name[-1]
        layer(f"relu{n}", V1.RELU, [name], [name])
        previous = name
        if n in "12":
            lrn(f"norm{n}", name)
            pool(f"pool{n}", f"norm{n}")
            previous = f"pool{n}"
        elif n == "5":
            pool("pool5", name)
            previous = "pool5"
    for name in FC:
        fc = layer(name, V1.INNER_PRODUCT, [previous], [name])
        fc.inner_product_param.num_output = shapes[name][0][2]
        fc.inner_product_param.weight_filler.type = "gaussian"
        fc.inner_product_param.weight_filler.std = 0.01 if name == "fc8" else 0.005
        fc.inner_product_param.bias_filler.type = "constant"
        fc.inner_product_param.bias_filler.value = 0 if name == "fc8" else 0.1
        learnable(fc, name)
        previous = name
        if name != "fc8":
            n = name[-1]
            layer(f"relu{n}", V1.RELU, [name], [name])
            drop = layer(f"drop{n}", V1.DROPOUT, [name], [name])
            drop.dropout_param.dropout_ratio = 0.5
    layer("loss", V1.SOFTMAX_LOSS, ["fc8", "label"], ["loss"])
    return net


def legacy_shapes(net) -> dict:
    """The legacy shapes a 2014 file would hold for a caffe.Net's learnable layers (padded with 1s to 4 axes);
    for stand-ins of reduced AlexNets that train in seconds."""
    return {name: [(1,) * (4 - b.data.ndim) + tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()}


def write_v1_alexnet(path, **kwargs) -> Path:
    """Write the stand-in `bvlc_alexnet.caffemodel` (about 233 MB at the real shapes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(v1_alexnet(**kwargs).SerializeToString())
    return path
