"""`load_model`: a Q3 net ready for input gradients, with its transformer and class names.

    python -m q3_visualize_break.loading --show auto   # which model `auto` picks, and what it is

Model choices:
  bvlc_alexnet  BVLC AlexNet on ImageNet: weights from `python -m tools.download_model bvlc_alexnet`
                (or a copy you have: Q3_WEIGHTS=path, `make q3 WEIGHTS=path`), class names and mean
                from `python -m tools.get_ilsvrc_aux`
  demo          the offline model `make demo` trains, described by results/demo/pretrained/model.json
  PATH          any such model card (model.json, see model_card.py)
  auto          bvlc_alexnet when its weights are present, else demo when its card is present

The device comes from tools.device, the transformer from tools.transform, the deploys from deploys.py, and
the net with its weights checked from tools.weights.load_checked_net.
"""

import argparse
import difflib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from q3_visualize_break.deploys import HERE, committed_deploy, gradients_deploy_text
from q3_visualize_break.model_card import card_weights, demo_card_path, read_card
from tools import device, paths, transform
from tools.cli import exit_on
from tools.fileio import write_text
from tools.weights import load_checked_net

BVLC_WEIGHTS = paths.MODELS / "bvlc_alexnet" / "bvlc_alexnet.caffemodel"
SYNSET_WORDS = paths.DATA / "ilsvrc12" / "synset_words.txt"
IMAGENET_MEAN = paths.DATA / "ilsvrc12" / "imagenet_mean.npy"
CHOICES = ("auto", "bvlc_alexnet", "demo")
WEIGHTS_ENV = "Q3_WEIGHTS"  # a BVLC AlexNet .caffemodel the user already has, used instead of BVLC_WEIGHTS


def bvlc_weights() -> Path:
    return Path(os.environ.get(WEIGHTS_ENV) or BVLC_WEIGHTS)


@dataclass
class Model:
    """A net ready for input gradients, with what it takes to feed it and to read its answers."""

    net: object  # caffe.Net, TEST phase, from a gradients deploy
    transformer: object  # caffe.io.Transformer for the net's input blob (tools.transform)
    classes: list  # class names, index = output unit
    name: str
    description: str
    prototxt: Path | None  # the committed deploy it was built from; None when generated for a model card
    weights: Path
    device: str = "CPU"

    @property
    def input_name(self) -> str:
        return self.net.inputs[0]

    @property
    def input_shape(self) -> tuple:
        """(C, H, W) of one image."""
        return tuple(self.net.blobs[self.input_name].data.shape[1:])

    @property
    def bounds(self):
        """(low, high) of valid pixels in net input units, each (C, 1, 1): for clipping optimised images."""
        return transform.pixel_bounds(self.transformer, self.input_name)

    @property
    def pixel_scale(self) -> float:
        """Net input units per pixel unit (0..255)."""
        return transform.pixel_scale(self.transformer, self.input_name)

    def preprocess(self, image):
        from q3_visualize_break.images import as_rgb

        return transform.preprocess(self.transformer, as_rgb(image), self.input_name)

    def deprocess(self, x, clip=True):
        return transform.deprocess(self.transformer, x, self.input_name, clip=clip)

    def label(self, index: int) -> str:
        """A short name for display: the first synonym of an ImageNet label ("tabby, tabby cat" -> "tabby")."""
        return self.classes[index].split(",")[0].strip()

    def class_index(self, name: str) -> int:
        """The index of a class given by one of its names (case-insensitive), e.g. "dalmatian"."""
        wanted = name.strip().lower()
        for i, label in enumerate(self.classes):
            if wanted == label.lower() or wanted in (s.strip().lower() for s in label.split(",")):
                return i
        close = difflib.get_close_matches(wanted, [c.lower() for c in self.classes], n=3, cutoff=0.5)
        hint = f"; close: {', '.join(close)}" if close else ""
        raise ValueError(f"model '{self.name}' has no class named '{name}'{hint}; its classes are model.classes")


def start_notebook(choice, gpu, out_dir):
    """Each notebook's set-up cell: small inline figures, the model, the figure folder, and what was loaded.
    Returns (model, figure folder)."""
    import matplotlib.pyplot as plt

    from q3_visualize_break import figures

    plt.rcParams["figure.dpi"] = 55  # figures shown in the notebook: small enough to commit it executed
    model = load_model(choice, gpu)
    out = figures.output_dir(out_dir)
    print(f"model: {model.name} on {model.device} (python: {sys.executable})")
    print(model.description)
    print(f"figures: {out}")
    return model, out


def resolve_choice(choice: str) -> str:
    """"auto" -> "bvlc_alexnet" or "demo", whichever is present; others pass through."""
    if choice != "auto":
        return choice
    if bvlc_weights().exists():
        return "bvlc_alexnet"
    if demo_card_path().exists():
        return "demo"
    raise FileNotFoundError(
        f"no model for Q3: neither {bvlc_weights()} nor {demo_card_path()} exists. "
        "Fix: `python -m tools.download_model bvlc_alexnet` fetches BVLC AlexNet (ImageNet; also run "
        "`python -m tools.get_ilsvrc_aux` for its class names and mean), or `make demo` trains the offline "
        "demo model")


def load_model(choice="auto", gpu=None) -> Model:
    """A `Model` for choice "auto", "bvlc_alexnet", "demo" or a path to a model card (model.json)."""
    where = device.select(gpu)
    choice = str(choice)
    if choice not in CHOICES and not choice.endswith(".json") and not Path(choice).is_file():
        raise ValueError(f"unknown model '{choice}': choose one of {', '.join(CHOICES)} or give a model.json path")
    resolved = resolve_choice(choice)
    model = load_bvlc_alexnet() if resolved == "bvlc_alexnet" else load_card(
        demo_card_path() if resolved == "demo" else Path(choice))
    model.device = where
    return model


def load_bvlc_alexnet() -> Model:
    prototxt = HERE / "bvlc_alexnet_deploy_gradients.prototxt"
    weights = bvlc_weights()
    require(weights, "the BVLC AlexNet weights",
            f"run `python -m tools.download_model bvlc_alexnet`, or set {WEIGHTS_ENV} to a copy you have")
    require(SYNSET_WORDS, "the ImageNet class names", "run `python -m tools.get_ilsvrc_aux`")
    require(IMAGENET_MEAN, "the ImageNet mean", "run `python -m tools.get_ilsvrc_aux`")
    classes = [line.split(" ", 1)[1].strip() for line in SYNSET_WORDS.read_text().splitlines() if line.strip()]
    if len(classes) != 1000:
        raise ValueError(f"{SYNSET_WORDS} lists {len(classes)} classes, not ILSVRC-2012's 1000: delete it and run "
                         "`python -m tools.get_ilsvrc_aux` again")
    mean_bgr = transform.mean_bgr(IMAGENET_MEAN)
    net = load_checked_net(prototxt, weights, fix="use BVLC AlexNet's ImageNet weights (python -m "
                                                  f"tools.download_model bvlc_alexnet, or {WEIGHTS_ENV}=path)")
    description = ("BVLC AlexNet (Krizhevsky et al. 2012) trained on ImageNet ILSVRC-2012: 1000 classes, a "
                   "227x227 BGR image minus the per-channel ImageNet mean "
                   f"({', '.join(f'{m:.1f}' for m in mean_bgr)}) in, the unnormalised class scores fc8 out "
                   f"(deploy without Softmax: {prototxt.relative_to(paths.REPO)})")
    return Model(net, net_transformer(net, mean_bgr, 255.0), classes, "bvlc_alexnet", description, prototxt, weights)


def load_card(path) -> Model:
    path = Path(path)
    card = read_card(path)
    weights = card_weights(card, path)
    require(weights, f"the weights of model card {path}",
            "run `make demo`, which trains them" if path == demo_card_path()
            else "train the model, or correct 'weights' in the card")
    text = gradients_deploy_text(width=card["width"], crop=card["crop"], num_classes=len(card["classes"]),
                                 channels=card["channels"])
    committed = committed_deploy(text)
    fix = ("the model card's width/crop/classes must be those the weights were trained with; or point its "
           "'weights' at the right file")
    if committed is not None:
        net, prototxt = load_checked_net(committed, weights, fix=fix), committed
    else:
        with tempfile.TemporaryDirectory() as tmp:  # caffe.Net only reads files
            deploy = write_text(Path(tmp) / "deploy_gradients.prototxt", text)
            net, prototxt = load_checked_net(deploy, weights, fix=fix), None
    where = prototxt.relative_to(paths.REPO) if prototxt else "generated for this card"
    description = (f"{card['description']} ({len(card['classes'])} classes; AlexNet at width {card['width']}, "
                   f"{card['crop']}x{card['crop']} input; deploy without Softmax: {where}; weights {weights})")
    transformer = net_transformer(net, transform.mean_bgr(mean_value=card["mean_value"]), float(card["raw_scale"]))
    return Model(net, transformer, list(card["classes"]), str(card["name"]), description, prototxt, weights)


def require(path: Path, what: str, fix: str):
    """FileNotFoundError naming the file, what it is and how to get it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{what} ({path}) not found: {fix}")


def net_transformer(net, mean_bgr, raw_scale):
    return transform.make_transformer(net.blobs[net.inputs[0]].data.shape, mean_bgr, raw_scale, net.inputs[0])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m q3_visualize_break.loading",
                                 description="Load a Q3 model and say what it is.")
    ap.add_argument("--show", metavar="CHOICE", default="auto",
                    help="auto, bvlc_alexnet, demo or a model.json (default auto)")
    a = ap.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    with exit_on(ValueError):
        model = load_model(a.show, os.environ.get("GPU"))
    print(f"{model.name} on {model.device}: {model.description}")


if __name__ == "__main__":
    main()
