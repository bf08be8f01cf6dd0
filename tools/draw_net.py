"""Draw a net prototxt as a picture with Caffe's own `caffe.draw` (pydot + Graphviz).

    python -m tools.draw_net models/q1/fashion-mnist/baseline/train_val.prototxt baseline.png
"""

import argparse
from pathlib import Path

from google.protobuf import text_format

from tools.fileio import atomic_path


def draw(prototxt, out, rankdir="LR", phase=None) -> Path:
    """Render `prototxt` to `out` (.png, .svg or .pdf by its suffix); `phase` TRAIN/TEST filters layers."""
    import caffe.draw
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(Path(prototxt).read_text(), net)
    except text_format.ParseError as e:
        raise ValueError(f"{prototxt}: not a valid NetParameter: {e}") from None
    phase_value = {None: None, "TRAIN": caffe.TRAIN, "TEST": caffe.TEST, "ALL": None}[phase]
    out = Path(out)
    with atomic_path(out, suffix=out.suffix) as tmp:
        caffe.draw.draw_net_to_file(net, str(tmp), rankdir, phase_value)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.draw_net",
                                 description="Draw a Caffe net prototxt as PNG/SVG/PDF (needs Graphviz's dot).")
    ap.add_argument("prototxt")
    ap.add_argument("out", help="output image; the format follows the suffix (.png, .svg, .pdf)")
    ap.add_argument("--rankdir", default="LR", choices=["LR", "TB", "BT", "RL"], help="layout direction")
    ap.add_argument("--phase", choices=["TRAIN", "TEST", "ALL"], help="draw only the layers of this phase")
    a = ap.parse_args(argv)
    if not Path(a.prototxt).exists():
        raise SystemExit(f"error: no such prototxt: {a.prototxt}")
    try:
        print(draw(a.prototxt, a.out, a.rankdir, a.phase))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
