"""Reading trained weights (.caffemodel) without building the net they belong to."""

from pathlib import Path

import numpy as np


def read_net(caffemodel):
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
    return net


def blob_shape(blob) -> tuple:
    """A stored blob's shape; old (V1) files give num/channels/height/width instead."""
    return tuple(blob.shape.dim) if blob.shape.dim else (blob.num, blob.channels, blob.height, blob.width)


def blob_array(blob) -> np.ndarray:
    """A BlobProto (a layer's weights, a mean file) as a float32 array of its shape."""
    return np.asarray(blob.data, np.float32).reshape(blob_shape(blob))


def layer_params(caffemodel, layer: str) -> list[np.ndarray]:
    """The learned blobs (weights, bias) of one layer."""
    net = read_net(caffemodel)
    for lay in [*net.layer, *net.layers]:
        if lay.name == layer:
            return [blob_array(b) for b in lay.blobs]
    names = [lay.name for lay in net.layer if lay.blobs]
    raise KeyError(f"{caffemodel} has no layer '{layer}' (layers with weights: {', '.join(names)})")


def param_shapes(caffemodel) -> dict[str, list[tuple]]:
    """{layer: [blob shapes]} for every layer with weights: what -weights can copy into a net."""
    net = read_net(caffemodel)
    return {lay.name: [blob_shape(b) for b in lay.blobs] for lay in [*net.layer, *net.layers] if lay.blobs}
