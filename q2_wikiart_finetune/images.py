"""The paintings' files in <out>/images/: checking that an image decodes, storing it as a JPEG, and taking
the ones a user already has from a folder of their own.

    problem = image_problem(data)         # None, or 'truncated image', 'html page, not an image', ...
    store(data, images / "x.jpg", size)   # atomically; a JPEG as it came, anything else (or at a size) re-encoded
    present = whole_images(subset, images, workers=4)   # what an earlier run stored; a damaged one is moved aside

images/ holds JPEGs only, so that <image_id>.jpg is what its name says. An image counts only once it
decodes completely: one cut short (by a failed run of the course's own script, a full disk, a copy) is
moved aside as <name>.damaged, never deleted, and fetched again.

--from-dir DIR: <image_id>.jpg, .jpeg or .png at any depth under DIR (the shared WikiArt collection files
them as <Style>/<image_id>.jpg), any case of extension. Each is checked to decode (a damaged one is
reported and not used), then copied (or with --link hard|symlink, linked) to images/<image_id>.jpg. A
PNG, and any file when a size is given, is re-encoded as a JPEG, never linked. Nothing under DIR is ever
written, renamed or deleted.
"""

import argparse
import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from tools.download import looks_like_html
from tools.errors import ToolkitError
from tools.fileio import atomic_path, move_aside, write_bytes, write_text

ORIGINAL = "original"
JPEG_QUALITY = 90
LOCAL_SUFFIXES = (".jpg", ".jpeg", ".png")
LINKS = ("hard", "symlink")


class ImageSizeMismatch(ToolkitError, ValueError):
    """images/ holds images stored at another size than the one asked for; the message says how to go on."""


class LinkError(ToolkitError, OSError):
    """A --link that the file system refuses; the message says what to use instead."""


# ---- sizes: 'original', 256 (the shorter side) or (width, height) ----------------------------------------


def parse_size(text: str):
    """'256' -> 256 (the shorter side), '256x192' -> (256, 192) (width, height), 'original' -> None."""
    if text == ORIGINAL:
        return None
    try:
        numbers = [int(part) for part in text.lower().split("x")]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or min(numbers) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size: use 256 (shorter side) or 256x256 (width x height)")
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


def size_name(size) -> str:
    return ORIGINAL if size is None else str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def target_size(image_size, size):
    """The (width, height) to store an image of `image_size` at."""
    if isinstance(size, int):
        scale = size / min(image_size)
        return max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale))
    return size


def check_size_record(out: Path, size) -> None:
    """Refuse to mix image sizes in one images/ folder; record the size on first use."""
    record = out / "image_size.txt"
    images = out / "images"
    if record.exists():
        stored = record.read_text().strip()
    elif images.is_dir() and any(images.glob("*.jpg")):
        stored = ORIGINAL  # written by the course's own script, which does not resize
    else:
        write_text(record, size_name(size) + "\n")
        return
    if stored != size_name(size):
        flag = "" if stored == ORIGINAL else f" --resize {stored}"
        raise ImageSizeMismatch(f"{images} holds images stored at size '{stored}', not '{size_name(size)}'. "
                                f"Fix: rerun with{flag or 'out --resize'}, or use another --out (or move {images} "
                                "aside)")
    if not record.exists():
        write_text(record, stored + "\n")


# ---- decoding and storing --------------------------------------------------------------------------------


def decode(data: bytes, size=None) -> Image.Image:
    """Decode the whole image, raising on a damaged one; a JPEG is decoded at the smallest scale it allows.

    JPEG's scaled decoding still reads every byte of the file, so truncation is caught wherever the file
    was cut (as by a full-size Image.load()), at a fraction of the cost of a full-size decode.
    """
    image = Image.open(io.BytesIO(data))
    if size is None:
        smallest = (1, 1)
    elif isinstance(size, int):
        smallest = target_size(image.size, size)  # the shorter side stays the shorter one after an EXIF rotation
    else:
        smallest = (max(size), max(size))  # at least the target either way round, in case of an EXIF rotation
    image.draft(None, smallest)
    image.load()
    return image


def image_problem(data: bytes):
    """Why `data` is not a usable image ('not an image', 'truncated image', ...), or None when it is."""
    try:
        decode(data)
    except Image.DecompressionBombError:
        return "image too large"
    except UnidentifiedImageError:
        # A 200 with a web page instead of the picture is how blocked or rate-limited clients are often answered.
        return "html page, not an image" if looks_like_html(data) else "not an image"
    except (OSError, SyntaxError, ValueError) as e:
        return "truncated image" if "truncated" in str(e).lower() else "corrupt image"
    return None


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def store(data: bytes, dest: Path, size) -> None:
    """Write the image atomically as a JPEG: a JPEG's bytes as they came, else re-encoded (at `size` if given).

    The caller has checked `data` with image_problem: only an image that decodes completely is stored.
    """
    if size is None and is_jpeg(data):
        write_bytes(dest, data)
        return
    if size is None:
        image = Image.open(io.BytesIO(data))
        image.load()
    else:
        image = decode(data, size)
    # OpenCV (Caffe's ImageData) applies the EXIF orientation of an original; a re-encoded copy has none.
    image = ImageOps.exif_transpose(image).convert("RGB")
    if size is not None:
        image = image.resize(target_size(image.size, size), Image.Resampling.LANCZOS)
    with atomic_path(dest, suffix=".jpg") as tmp:
        image.save(tmp, "JPEG", quality=JPEG_QUALITY)


def whole_images(paintings, images_dir: Path, *, workers: int) -> set[str]:
    """The image_ids whose file in `images_dir`, from an earlier run, decodes completely.

    A file that does not (cut short, an error page the course's own script stored) is moved aside as
    <name>.damaged with a line saying so, and so is fetched again: the header alone would let it into val.txt.
    """
    stored = [p for p in paintings if (images_dir / p.filename).is_file()]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # decoding is C code that releases the GIL
        problems = list(pool.map(lambda p: image_problem((images_dir / p.filename).read_bytes()), stored))
    whole = set()
    for painting, problem in zip(stored, problems, strict=True):
        if problem is None:
            whole.add(painting.image_id)
            continue
        path = images_dir / painting.filename
        aside = move_aside(path, "damaged")
        print(f"note: {path} does not decode completely ({problem}): moved it to {aside.name}; fetching it again",
              file=sys.stderr)
    return whole


# ---- --from-dir: images the user already has -----------------------------------------------------------


def find_local_images(root: Path, wanted) -> dict[str, Path]:
    """image_id -> its file under `root`, for the ids in `wanted`, in one walk of the tree (~80k files).

    A file counts when its name is <image_id> plus .jpg/.jpeg/.png in any case. When an id is there
    twice, the first in sorted path order is taken, so the choice does not depend on the file system.
    """
    wanted, found = set(wanted), {}
    if not wanted:
        return found  # a rerun with everything in place: no need to walk a large collection
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in LOCAL_SUFFIXES and stem in wanted and stem not in found:
                found[stem] = Path(folder) / name
    return found


def link_into(src: Path, dest: Path, how: str) -> None:
    """Link `src` at `dest` atomically; the link replaces `dest`, `src` itself is never written."""
    with atomic_path(dest, suffix=".jpg") as tmp:
        tmp.unlink()  # atomic_path made a file there; the link takes its name
        try:
            if how == "hard":
                os.link(src, tmp)
            else:
                os.symlink(src.resolve(), tmp)
        except OSError as e:
            fix = "--link symlink, or leave --link out to copy" if how == "hard" else "leave --link out to copy"
            raise LinkError(f"cannot {how}-link {src} into {dest.parent}: {e.strerror}. Fix: {fix}") from None


def place_local(src: Path, dest: Path, size, link):
    """Put the local image `src` at `dest` as a JPEG (linked, copied, or re-encoded: a PNG, or at `size`);
    None, or why `src` was not used ('damaged in --from-dir: truncated image')."""
    data = src.read_bytes()
    problem = image_problem(data)
    if problem:
        return f"damaged in --from-dir: {problem}"
    if link and size is None and is_jpeg(data):
        link_into(src, dest, link)
    else:
        store(data, dest, size)
    return None
