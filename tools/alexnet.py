"""BVLC AlexNet with `caffe.NetSpec`, layer for layer the reference net, ready for fine-tuning.

    train_val(...)   ImageData input, the pretrained body, a fresh last layer (e.g. fc8_wikiart)
    deploy(...)      Input blob, same body, Softmax (or the raw scores, for gradients)

The body matches `models/bvlc_alexnet/train_val.prototxt` of BVLC Caffe: names, kernel sizes,
strides, groups, LRN parameters, fillers, lr_mult/decay_mult and dropout. `width` scales every
layer's channel count and `crop` the input size, so the same generator also emits a reduced AlexNet
for small images (identical layer names) that trains in minutes on a CPU. Written the way Caffe's
examples/pycaffe/caffenet.py writes CaffeNet: `body` reads like the diagram, one line per layer.
Used by Q2 (q2_wikiart_finetune.task), Q3's gradient deploys and the benchmarks.

Modes (`learn`):
  finetune           every layer learns: pretrained ones at 1x/2x the base rate, the new one at 10x/20x
  feature_extractor  pretrained layers frozen (lr_mult 0), only the new last layer learns
"""

import caffe
from caffe import layers as L
from caffe import params as P

MODES = ("finetune", "feature_extractor")
FC = 4096  # fc6 and fc7 outputs at width 1


def scaled(channels, width, multiple=2):
    """Channel count at `width`, a multiple of 2 so the two-group convolutions still split evenly."""
    return max(multiple, int(round(channels * width / multiple)) * multiple)


def learning(learn: bool):
    """lr_mult/decay_mult for weights and biases, as in the reference net; zero when frozen."""
    if learn:
        return [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
    return [dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)]


def conv_relu(bottom, nout, ks, stride=1, pad=0, group=1, bias=0.0, learn=True):
    """Convolution (gaussian 0.01 weights, constant `bias`) and its in-place ReLU."""
    # leave out the defaults (stride 1, pad 0, group 1), as BVLC's prototxt does
    extra = {k: v for k, v, default in (("stride", stride, 1), ("pad", pad, 0), ("group", group, 1)) if v != default}
    conv = L.Convolution(bottom, num_output=nout, kernel_size=ks, **extra, param=learning(learn),
                         weight_filler=dict(type="gaussian", std=0.01), bias_filler=dict(type="constant", value=bias))
    return conv, L.ReLU(conv, in_place=True)


def fc_relu(bottom, nout, learn=True):
    """InnerProduct (gaussian 0.005 weights, bias 0.1) and its in-place ReLU."""
    fc = L.InnerProduct(bottom, num_output=nout, param=learning(learn),
                        weight_filler=dict(type="gaussian", std=0.005), bias_filler=dict(type="constant", value=0.1))
    return fc, L.ReLU(fc, in_place=True)


def lrn(bottom):
    return L.LRN(bottom, local_size=5, alpha=1e-4, beta=0.75)


def max_pool(bottom, ks=3, stride=2):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


def body(n, data, *, width=1.0, learn=True, dropout=True):
    """conv1 ... fc7 on `data`, tops named as in the reference net; returns the top fc8 reads.
    AlexNet normalises before pooling (CaffeNet swaps the two)."""
    def w(channels):
        return scaled(channels, width)

    n.conv1, n.relu1 = conv_relu(data, w(96), 11, stride=4, learn=learn)
    n.norm1 = lrn(n.relu1)
    n.pool1 = max_pool(n.norm1)
    n.conv2, n.relu2 = conv_relu(n.pool1, w(256), 5, pad=2, group=2, bias=0.1, learn=learn)
    n.norm2 = lrn(n.relu2)
    n.pool2 = max_pool(n.norm2)
    n.conv3, n.relu3 = conv_relu(n.pool2, w(384), 3, pad=1, learn=learn)
    n.conv4, n.relu4 = conv_relu(n.relu3, w(384), 3, pad=1, group=2, bias=0.1, learn=learn)
    n.conv5, n.relu5 = conv_relu(n.relu4, w(256), 3, pad=1, group=2, bias=0.1, learn=learn)
    n.pool5 = max_pool(n.relu5)
    n.fc6, n.relu6 = fc_relu(n.pool5, w(FC), learn=learn)
    top = n.relu6
    if dropout:
        n.drop6 = top = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7, n.relu7 = fc_relu(top, w(FC), learn=learn)
    top = n.relu7
    if dropout:
        n.drop7 = top = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    return top


def classifier(bottom, num_classes, name, boost=True):
    """The last layer. A new name makes Caffe start it fresh instead of copying the pretrained fc8;
    `boost` gives it 10x/20x the base rate so it catches up with the pretrained layers."""
    mult = (10, 20) if boost else (1, 2)
    return L.InnerProduct(bottom, name=name, num_output=num_classes,
                          param=[dict(lr_mult=mult[0], decay_mult=1), dict(lr_mult=mult[1], decay_mult=0)],
                          weight_filler=dict(type="gaussian", std=0.01), bias_filler=dict(type="constant", value=0))


def image_data(source, *, train, batch_size, new_size, crop, root_folder="", mean_file=None, mean_value=None):
    """ImageData input: resize to new_size x new_size, random crop + mirror in TRAIN, centre crop in TEST."""
    transform = dict(mirror=train, crop_size=crop)
    if mean_file:
        transform["mean_file"] = str(mean_file)
    if mean_value is not None:
        transform["mean_value"] = list(mean_value)
    return L.ImageData(name="data", ntop=2, transform_param=transform,
                       image_data_param=dict(source=str(source), root_folder=str(root_folder), batch_size=batch_size,
                                             shuffle=train, new_height=new_size, new_width=new_size),
                       include=dict(phase=caffe.TRAIN if train else caffe.TEST))


def train_val(train_list, val_list, *, num_classes=10, last_layer="fc8_wikiart", mode="finetune", width=1.0,
              new_size=256, crop=227, batch_size=50, val_batch_size=50, root_folder="", mean_file=None,
              mean_value=None, name="AlexNet-finetune"):
    """The fine-tuning net: ImageData (train/val) -> AlexNet body -> new last layer -> loss, accuracy."""
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
    common = dict(new_size=new_size, crop=crop, root_folder=root_folder, mean_file=mean_file, mean_value=mean_value)
    n = caffe.NetSpec()
    n.data, n.label = image_data(train_list, train=True, batch_size=batch_size, **common)
    train_input = n.to_proto()
    n = caffe.NetSpec()
    n.data, n.label = image_data(val_list, train=False, batch_size=val_batch_size, **common)
    top = body(n, n.data, width=width, learn=mode == "finetune")
    n[last_layer] = scores = classifier(top, num_classes, last_layer)
    n.accuracy = L.Accuracy(scores, n.label, include=dict(phase=caffe.TEST))
    n.loss = L.SoftmaxWithLoss(scores, n.label)
    net = n.to_proto()
    net.layer.insert(0, train_input.layer[0])  # one data layer per phase, both named "data"
    net.name = name
    return net


def deploy(*, num_classes=1000, last_layer="fc8", width=1.0, crop=227, batch_size=10, channels=3,
           softmax=True, force_backward=False, name="AlexNet-deploy"):
    """The deploy net: an Input blob, the body, the last layer and, if `softmax`, "prob".

    With softmax=False and force_backward=True it is the net for input gradients (Q3): the output
    is the unnormalised class score and backward reaches the data blob.
    """
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch_size, channels, crop, crop]))
    top = body(n, n.data, width=width, learn=True)  # dropout layers are identities in TEST, as in BVLC's deploy
    n[last_layer] = classifier(top, num_classes, last_layer, boost=False)
    if softmax:
        n.prob = L.Softmax(n[last_layer])
    net = n.to_proto()
    net.name = name
    if force_backward:
        net.force_backward = True
    return net


def _conv_table():
    """(name, outputs, kernel, stride, pad, group, bias filler value) of every convolution at width 1, read
    off the net body() builds: the table bench/torch_nets.py builds its PyTorch twin from."""
    rows = []
    for layer in deploy(batch_size=1).layer:
        if layer.type == "Convolution":
            p = layer.convolution_param
            rows.append((layer.name, p.num_output, p.kernel_size[0], p.stride[0] if p.stride else 1,
                         p.pad[0] if p.pad else 0, p.group, round(p.bias_filler.value, 6)))
    return rows


CONVS = _conv_table()
