"""Test pictures for the benchmarks: JPEGs cut from scikit-image's sample photographs, made with Pillow.

    full_size(folder, n)        n JPEGs of 500-800 pixels a side (the size paintings come at)
    resized(src, folder, size)  the same, stored the way `download_wikiart.py --resize 256x256` stores them
"""

from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "colorwheel", "camera", "brick", "grass", "gravel", "moon", "coins", "clock")


def photos() -> list:
    """scikit-image's bundled sample photographs as RGB arrays (those that need no download)."""
    import skimage.data

    out = []
    for name in PHOTOS:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # a sample that needs a download (pooch) is simply left out
            continue
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        out.append(image[..., :3].astype(np.uint8))
    return out


def full_size(folder, n, *, low=500, high=800, seed=0, quality=90) -> list[Path]:
    """n JPEGs with sides drawn from [low, high]: a random crop of a random photo, scaled, maybe mirrored."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    sources = [Image.fromarray(p) for p in photos()]
    files = []
    for i in range(n):
        src = sources[rng.randint(len(sources))]
        w, h = (int(v) for v in rng.randint(low, high + 1, size=2))
        cw, ch = (int(rng.randint(src.width // 2, src.width + 1)), int(rng.randint(src.height // 2, src.height + 1)))
        x, y = int(rng.randint(0, src.width - cw + 1)), int(rng.randint(0, src.height - ch + 1))
        image = src.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BILINEAR)
        if rng.rand() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        f = folder / f"{i:05d}.jpg"
        image.save(f, "JPEG", quality=quality)
        files.append(f)
    return files


def resized(files, folder, size=(256, 256)) -> list[Path]:
    """Each file re-encoded at `size` by the downloader's own code (q2_wikiart_finetune.images.store)."""
    from q2_wikiart_finetune.images import store

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        dest = folder / Path(f).name
        store(Path(f).read_bytes(), dest, size)
        out.append(dest)
    return out


def list_file(files, path, num_classes=10, seed=0) -> Path:
    """An ImageData list `name label` (names relative to the files' folder), labels drawn at random."""
    rng = np.random.RandomState(seed)
    path = Path(path)
    path.write_text("".join(f"{Path(f).name} {rng.randint(num_classes)}\n" for f in files))
    return path
