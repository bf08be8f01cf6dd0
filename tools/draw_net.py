"""Draw a net prototxt as a picture with Caffe's own `caffe.draw` (pydot + Graphviz).

    python -m tools.draw_net models/q1/fashion-mnist/baseline/train_val.prototxt baseline.png

caffe.draw needs Graphviz's `dot` program. Without it `draw` raises GraphvizMissing, whose message is the
one line a caller prints when it skips its diagrams (`graphviz_missing()` says so before any work), and
this command exits 1 with that line.
"""

import argparse
import errno
import shutil
from pathlib import Path

from google.protobuf import text_format

from tools.cli import exit_on
from tools.errors import ToolkitError
from tools.fileio import atomic_path

GRAPHVIZ_FIX = "apt-get install graphviz, brew install graphviz, or conda install graphviz"
GRAPHVIZ_MISSING = f"net diagrams skipped: Graphviz's `dot` is not installed ({GRAPHVIZ_FIX})"


class GraphvizMissing(ToolkitError, RuntimeError):
    """Graphviz's `dot` is not on PATH; the message is GRAPHVIZ_MISSING."""


def graphviz_missing() -> str | None:
    """GRAPHVIZ_MISSING when pydot cannot find `dot` on PATH (where it looks), else None."""
    return None if shutil.which("dot") else GRAPHVIZ_MISSING


def draw(prototxt, out, rankdir="LR", phase=None) -> Path:
    """Render `prototxt` to `out` (.png, .svg or .pdf by its suffix); `phase` TRAIN/TEST filters layers.
    Raises GraphvizMissing without Graphviz's `dot`."""
    missing = graphviz_missing()
    if missing:
        raise GraphvizMissing(missing)
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
    with exit_on(ValueError):
        if not Path(a.prototxt).exists():
            raise FileNotFoundError(errno.ENOENT, "no such prototxt", a.prototxt)
        print(draw(a.prototxt, a.out, a.rankdir, a.phase))


if __name__ == "__main__":
    main()
