"""Reading trained weights (.caffemodel) and checking them against a net before Caffe copies them.

    check_fits(net, "models/bvlc_alexnet/bvlc_alexnet.caffemodel")   # WeightsMismatch, or the layers it lacks
    load_checked_net("deploy.prototxt", "snap_iter_1000.caffemodel")  # caffe.Net (TEST) with the weights, checked
    layer_params(caffemodel, "conv1")                                # [weights, bias] as arrays

Weights files come in the formats Caffe wrote over the years, and Caffe reads all of them:
  - current: `NetParameter.layer` (LayerParameter), blob shapes in `BlobProto.shape.dim`;
  - V1 (2014-2015, e.g. the BVLC model zoo's bvlc_alexnet.caffemodel): `NetParameter.layers`
    (V1LayerParameter, enum types), blobs with the legacy 4-field shape num/channels/height/width,
    counted from the end: a bias of 96 is 1x1x1x96, fc6's weights 1x1x4096x9216;
  - V0 (2013): like V1, but each `layers` entry wraps its name and blobs in a `layer` field.

Caffe copies weights by layer name (Net::CopyTrainedLayersFrom): a layer the file lacks keeps its
filler, a file layer the net lacks is ignored, and a blob whose shape differs aborts the process.
`check_fits` follows the same rules, including Blob::ShapeEquals for legacy shapes (they match when
they equal the net blob's shape padded with leading 1s to four axes), and explains a mismatch
instead of aborting.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.errors import ToolkitError

BLOB_NAMES = ("weights", "bias")  # what blobs 0 and 1 of a learnable layer are


class WeightsMismatch(ToolkitError, ValueError):
    """A weights file does not fit a net; the message names the layer, the blob, both shapes and the fix."""


@dataclass(frozen=True)
class StoredShape:
    dims: tuple
    legacy: bool  # num/channels/height/width (V0/V1 files, old mean files) rather than shape.dim

    def fits(self, net_shape) -> bool:
        """Caffe's Blob::ShapeEquals: legacy shapes index from the end, padded with 1s to four axes."""
        net_shape = tuple(net_shape)
        if self.legacy:
            return len(net_shape) <= 4 and (1,) * (4 - len(net_shape)) + net_shape == self.dims
        return net_shape == self.dims

    def __str__(self):
        return "x".join(map(str, self.dims)) + (" (legacy num/channels/height/width)" if self.legacy else "")


def read_net(caffemodel):
    """The whole NetParameter. Protobuf parses the file once, keeping the floats packed (not as Python objects)."""
    from caffe.proto import caffe_pb2

    path = Path(caffemodel)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} not found")
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise ValueError(f"{path} is not a Caffe weights file (NetParameter): {e}; re-create or re-download it") \
            from None
    if not any(blobs for _, blobs in _layers(net)):
        raise ValueError(f"{path} holds no learned weights (no layer with blobs): it is not a trained .caffemodel; "
                         "re-create or re-download it")
    return net


def _layers(net):
    """(name, blobs) of every layer, whichever format the file is in."""
    for layer in net.layer:
        yield layer.name, layer.blobs
    for layer in net.layers:  # V1; a V0 entry keeps name and blobs in its `layer` field
        yield (layer.layer.name, layer.layer.blobs) if layer.HasField("layer") else (layer.name, layer.blobs)


def stored_shape(blob) -> StoredShape:
    legacy = any(blob.HasField(f) for f in ("num", "channels", "height", "width"))
    if legacy:
        return StoredShape((blob.num, blob.channels, blob.height, blob.width), True)
    return StoredShape(tuple(blob.shape.dim), False)


def blob_shape(blob) -> tuple:
    """A stored blob's shape as written (legacy files: num/channels/height/width)."""
    return stored_shape(blob).dims


def blob_array(blob) -> np.ndarray:
    """A BlobProto (a layer's weights, a mean file) as a float32 array of its shape."""
    return np.asarray(blob.data, np.float32).reshape(blob_shape(blob))


def layer_params(caffemodel, layer: str) -> list[np.ndarray]:
    """The learned blobs (weights, bias) of one layer."""
    net = read_net(caffemodel)
    for name, blobs in _layers(net):
        if name == layer:
            return [blob_array(b) for b in blobs]
    names = [name for name, blobs in _layers(net) if blobs]
    raise KeyError(f"{caffemodel} has no layer '{layer}' (layers with weights: {', '.join(names)})")


def param_shapes(caffemodel) -> dict[str, list[StoredShape]]:
    """{layer: [stored blob shapes]} for every layer with weights: what -weights can copy into a net."""
    return {name: [stored_shape(b) for b in blobs] for name, blobs in _layers(read_net(caffemodel)) if blobs}


def net_param_shapes(net) -> dict[str, list[tuple]]:
    """{layer: [blob shapes]} of a caffe.Net's learnable layers."""
    return {name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()}


def check_fits(net, caffemodel, *, new_layers=(), require_all=False, fix=None) -> list[str]:
    """Check that Caffe can copy `caffemodel` into `net` (a caffe.Net, or {layer: [shapes]}).

    Raises WeightsMismatch when a layer of both has another number of blobs or a blob of another
    shape (Caffe would abort), and, with `require_all`, when the file lacks a learnable layer of the
    net other than `new_layers` (Caffe would silently keep its random filler). Returns the layers the
    file lacks, which start from their fillers. `fix` replaces the default advice in the message.
    """
    wanted = net if isinstance(net, dict) else net_param_shapes(net)
    have = param_shapes(caffemodel)
    for name, shapes in wanted.items():
        if name not in have:
            continue
        stored = have[name]
        if len(stored) != len(shapes):
            raise WeightsMismatch(
                f"layer '{name}': {caffemodel} holds {len(stored)} blob(s), the net has {len(shapes)} "
                f"({'bias_term differs' if {len(stored), len(shapes)} == {1, 2} else 'another layer type'}). "
                f"Fix: {fix or _default_fix(name)}")
        for i, (s, want) in enumerate(zip(stored, shapes, strict=True)):
            if not s.fits(want):
                what = BLOB_NAMES[i] if i < len(BLOB_NAMES) else f"blob {i}"
                raise WeightsMismatch(
                    f"layer '{name}' {what}: {caffemodel} holds {s}, the net wants {'x'.join(map(str, want))}. "
                    f"Fix: {fix or _default_fix(name)}")
    missing = [name for name in wanted if name not in have and name not in new_layers]
    if require_all and missing:
        raise WeightsMismatch(
            f"{caffemodel} has no weights for layer(s) {', '.join(missing)} of the net (it has "
            f"{', '.join(have) or 'none'}): these weights were trained for another net. "
            f"Fix: {fix or 'use the weights trained for this net, or the net they were trained with'}")
    return missing


def load_checked_net(prototxt, caffemodel, *, new_layers=(), require_all=True, fix=None):
    """caffe.Net (TEST phase) of `prototxt` with the weights of `caffemodel`, checked by `check_fits` before Caffe
    copies them: Caffe aborts the process on a blob of another shape and silently keeps the filler of a layer the
    file lacks, and either means the weights belong to another net. `require_all` defaults to True here: a net
    loaded to predict or to take gradients through needs every layer trained (`new_layers` excepted)."""
    import caffe

    net = caffe.Net(str(prototxt), caffe.TEST)
    check_fits(net, caffemodel, new_layers=new_layers, require_all=require_all, fix=fix)
    net.copy_from(str(caffemodel))
    return net


def _default_fix(name) -> str:
    return (f"Caffe copies weights by layer name, so a layer whose size changed must get a new name to start "
            f"from its filler (as fc8 -> fc8_wikiart for 10 classes); otherwise use weights trained for this net "
            f"(layer '{name}' as the net defines it)")
