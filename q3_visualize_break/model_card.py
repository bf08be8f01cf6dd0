"""Model cards: the model.json that describes a Caffe classifier Q3 can load (what `make demo` writes).

Keys: name, weights (absolute, or relative to the repo root or the card's folder), classes (names,
index = output unit), width and crop (of the reduced AlexNet the weights belong to), channels (3),
mean_value (per-channel BGR mean in raw units), raw_scale (255 for 0..255 pixels), description.
"""

import json
from pathlib import Path

from tools import paths

CARD_KEYS = ("name", "weights", "classes", "width", "crop", "channels", "mean_value", "raw_scale", "description")


def demo_card_path() -> Path:
    return paths.RESULTS / "demo" / "pretrained" / "model.json"


def read_card(path) -> dict:
    """A model card, checked: every key present and of the right kind."""
    path = Path(path)
    if not path.exists():
        fix = "`make demo` trains the demo model and writes it" if path == demo_card_path() else "check the path"
        raise FileNotFoundError(f"model card {path} not found: {fix}")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"model card {path} is not valid JSON ({e}): rewrite it, or rerun what made it") from None
    missing = [k for k in CARD_KEYS if k not in card]
    if missing:
        raise ValueError(f"model card {path} lacks {', '.join(missing)}; a card has keys {', '.join(CARD_KEYS)}")
    problems = []
    if not (isinstance(card["classes"], list) and card["classes"] and all(isinstance(c, str) for c in card["classes"])):
        problems.append("'classes' must be a non-empty list of names")
    if card["channels"] != 3:
        problems.append(f"'channels' is {card['channels']}, but Q3 works on colour (3-channel BGR) models")
    if not (isinstance(card["mean_value"], list) and len(card["mean_value"]) == card["channels"]):
        problems.append(f"'mean_value' must list one mean per channel ({card['channels']})")
    if not (isinstance(card["crop"], int) and card["crop"] >= 67):
        problems.append(f"'crop' is {card['crop']!r}; AlexNet needs an integer of at least 67")
    if not (isinstance(card["width"], (int, float)) and card["width"] > 0):
        problems.append(f"'width' is {card['width']!r}; it must be a positive number")
    if not (isinstance(card["raw_scale"], (int, float)) and card["raw_scale"] > 0):
        problems.append(f"'raw_scale' is {card['raw_scale']!r}; it must be a positive number (255 for 0..255 pixels)")
    if problems:
        raise ValueError(f"model card {path}: " + "; ".join(problems))
    return card


def card_weights(card: dict, card_path: Path) -> Path:
    """The card's weights: absolute, or relative to the repo root (or, failing that, to the card's folder)."""
    weights = Path(card["weights"])
    if weights.is_absolute():
        return weights
    for base in (paths.REPO, Path(card_path).parent):
        if (base / weights).exists():
            return base / weights
    return paths.REPO / weights
