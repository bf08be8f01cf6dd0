"""The Caffe nets the benchmarks time, made by the toolkit's own generators, and their FLOPs.

    input_version(train_val, shapes)   a train_val net with its TRAIN data layer replaced by an Input
                                       layer of the same tops (what `caffe time` needs), TEST layers out
    train_only(train_val)              the TRAIN net alone, TEST-only layers out
    data_layer_only(train_val)         just that data layer (its input path alone)
    q1_input_net(variant, batch)       Q1's ConvNet (Fashion-MNIST 1x28x28) that way, with its loss
    alexnet_deploy(batch)              BVLC AlexNet for timing: fc8 output, force_backward
    conv_fc_macs(net)                  multiply-accumulates of every Convolution/InnerProduct layer

FLOPs are counted for convolutions and fully connected layers only: forward 2 x MACs; backward
2 x MACs for the weight gradient plus 2 x MACs for the data gradient of every layer whose input
needs one (not the first layer on the data, unless force_backward).
"""

from pathlib import Path

from google.protobuf import text_format

from tools.fileio import write_text


def input_version(train_val, shapes, name=None):
    """The TRAIN net of `train_val` (a NetParameter) with its Data/ImageData layer swapped for an Input layer."""
    from caffe.proto import caffe_pb2

    train = train_only(train_val)
    net = caffe_pb2.NetParameter()
    net.CopyFrom(train)
    del net.layer[:]
    for layer in train.layer:
        if layer.type in ("Data", "ImageData"):
            inp = net.layer.add(name=layer.name, type="Input")
            inp.top.extend(layer.top)
            for shape in shapes:
                inp.input_param.shape.add().dim.extend(shape)
            continue
        copy = net.layer.add()
        copy.CopyFrom(layer)
        del copy.include[:]
    if name:
        net.name = name
    return net


def train_only(train_val):
    """The TRAIN net of `train_val` with its TEST-only layers left out (a solver without test nets needs no
    validation data, and the runner then checks none)."""
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    net.CopyFrom(train_val)
    del net.layer[:]
    for layer in train_val.layer:
        phases = [rule.phase for rule in layer.include if rule.HasField("phase")]
        if phases and caffe_pb2.TRAIN not in phases:
            continue
        net.layer.add().CopyFrom(layer)
    return net


def data_layer_only(train_val, name=None):
    """A net of nothing but the TRAIN data layer of `train_val`: `caffe time` of it is the input path alone."""
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter(name=name or f"{train_val.name}-data-only")
    for layer in train_val.layer:
        phases = [rule.phase for rule in layer.include if rule.HasField("phase")]
        if layer.type in ("Data", "ImageData") and (not phases or caffe_pb2.TRAIN in phases):
            copy = net.layer.add()
            copy.CopyFrom(layer)
            del copy.include[:]
            return net
    raise ValueError(f"{train_val.name} has no TRAIN Data/ImageData layer")


def q1_train_val(variant, batch, root="data/q1/fashion-mnist"):
    """Q1's train_val for Fashion-MNIST (q1_dropout_augment.nets), with batch size `batch`, LMDBs under `root`."""
    from q1_dropout_augment import nets

    spec = nets.DATASETS["fashion-mnist"]
    net = nets.train_val(spec, variant)
    for layer in net.layer:
        if layer.type == "Data":
            layer.data_param.batch_size = batch
            layer.data_param.source = layer.data_param.source.replace(spec.root, root)
            if layer.transform_param.mean_file:
                layer.transform_param.mean_file = layer.transform_param.mean_file.replace(spec.root, root)
    return net, spec


def q1_input_net(variant="dropout", batch=128):
    """Q1's ConvNet on 1x28x28 Fashion-MNIST (26x26 crops for the augmented variants) with Input layers."""
    from q1_dropout_augment import nets

    net, spec = q1_train_val(variant, batch)
    size = spec.crop if nets.flags(variant)[1] else spec.size
    return input_version(net, [[batch, spec.channels, size, size], [batch]], name=f"q1-{variant}-input-b{batch}")


def alexnet_deploy(batch=16, width=1.0, crop=227, num_classes=1000):
    """BVLC AlexNet (tools.alexnet), raw fc8 scores, backward down to the data."""
    from tools import alexnet

    return alexnet.deploy(batch_size=batch, width=width, crop=crop, num_classes=num_classes, softmax=False,
                          force_backward=True, name=f"AlexNet-w{width:g}-b{batch}")


def write(net, path) -> Path:
    return write_text(path, text_format.MessageToString(net))


def conv_fc_macs(net) -> list[dict]:
    """[{name, type, macs}] per forward pass of a pycaffe net's Convolution and InnerProduct layers."""
    import numpy as np

    out = []
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        if layer.type not in ("Convolution", "InnerProduct"):
            continue
        weights = layer.blobs[0].data
        top = net.blobs[net.top_names[name][0]]
        if layer.type == "Convolution":  # every output element: (C_in / group) x kh x kw MACs
            macs = top.count * int(np.prod(weights.shape[1:]))
        else:  # (N, in) x (in, out)
            macs = top.data.shape[0] * weights.size
        out.append({"name": name, "type": layer.type, "macs": int(macs)})
    return out


def flops(layers, input_grad: bool) -> dict:
    """Forward and forward+backward FLOPs from conv_fc_macs(); `input_grad`: the first layer's data gradient too."""
    total = sum(x["macs"] for x in layers)
    data_grad = total - (0 if input_grad else layers[0]["macs"])
    forward = 2 * total
    backward = 2 * total + 2 * data_grad
    return {"forward": forward, "backward": backward, "forward_backward": forward + backward}
