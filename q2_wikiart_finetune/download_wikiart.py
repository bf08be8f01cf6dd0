#!/usr/bin/env python
"""Download the course's WikiArt style subset and write the file lists of Caffe's ImageData layer.

    python q2_wikiart_finetune/download_wikiart.py -s 0 -i 2000 -w 16
    python -m q2_wikiart_finetune.download_wikiart --resize 256 --out data/wikiart

The interface of the course's script (VT ECE6504 F15 HW2, itself Caffe's
examples/finetune_flickr_style/assemble_data.py): the same -s and -i select the same images. It writes,
under --out (default data/wikiart/):

    images/<image_id>.jpg   the paintings (each checked to decode; written atomically)
    train.txt, val.txt      "<image_id>.jpg <label>" lines; val is the index's `test` split. The paths are
                            relative to images/: give ImageData root_folder: "data/wikiart/images/"
    styles.txt              the label names, one per line, line i is label i
    failures.csv            image_id,url,cause of every image that could not be had in this run
    image_size.txt          the size the images are stored at ('original', '256' or e.g. '256x256')

A rerun fetches only what is missing. Failures (HTTP errors, timeouts, HTML instead of a picture,
truncated files) are counted by cause and skipped.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file (python q2_wikiart_finetune/download_wikiart.py): Python put this folder on sys.path,
    # not the repository root that `tools` and `q2_wikiart_finetune` live in.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import io
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import requests
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from q2_wikiart_finetune.wikiart_index import (
    DEFAULT_INDEX_URL,
    INDEX_ENV,
    STYLES,
    WikiArtIndexError,
    read_index,
    select_subset,
)
from tools import paths
from tools.download import BACKOFF, DownloadError, error_cause, http_session
from tools.fileio import atomic_path, write_bytes, write_text

ORIGINAL = "original"


@dataclass(frozen=True)
class Outcome:
    status: str  # "downloaded", "present" or "failed"
    cause: str = ""  # why it failed: "http 404", "timeout", "not an image", ...


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


def decode(data: bytes, size=None) -> Image.Image:
    """Decode the whole image, raising on a damaged one; a JPEG is decoded at the smallest scale it allows.

    JPEG's scaled decoding still reads every byte of the file, so truncation is still caught, at a
    fraction of the cost of a full-size decode.
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
        return "not an image"
    except (OSError, SyntaxError, ValueError) as e:
        return "truncated image" if "truncated" in str(e).lower() else "corrupt image"
    return None


def store(data: bytes, dest: Path, size) -> None:
    """Write the image atomically: its bytes as they came, or re-encoded at `size`."""
    if size is None:
        write_bytes(dest, data)
        return
    image = decode(data, size)
    # OpenCV (Caffe's ImageData) applies the EXIF orientation of an original; a resized copy has none.
    image = ImageOps.exif_transpose(image).convert("RGB")
    image = image.resize(target_size(image.size, size), Image.Resampling.LANCZOS)
    with atomic_path(dest, suffix=".jpg") as tmp:
        image.save(tmp, "JPEG", quality=90)


def is_present(path: Path) -> bool:
    """An image from an earlier run. Files are only written whole and checked, so a header check suffices."""
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def fetch_painting(session, painting, images_dir: Path, size, timeout, retries: int) -> Outcome:
    dest = images_dir / painting.filename
    if dest.exists() and is_present(dest):
        return Outcome("present")
    for attempt in range(retries + 1):
        try:
            reply = session.get(painting.image_url, timeout=timeout)
            break
        except requests.exceptions.ChunkedEncodingError:
            # Dropped mid-body, which the session's own retries do not cover.
            if attempt == retries:
                return Outcome("failed", "connection dropped")
            time.sleep(BACKOFF * 2 ** attempt)
        except requests.RequestException as e:
            return Outcome("failed", error_cause(e))
    if reply.status_code != 200:
        return Outcome("failed", f"http {reply.status_code}")
    problem = image_problem(reply.content)
    if problem:
        return Outcome("failed", problem)
    store(reply.content, dest, size)
    return Outcome("downloaded")


def download_all(paintings, images_dir: Path, *, workers: int, size, timeout, retries: int,
                 progress=None) -> dict[str, Outcome]:
    """Fetch the paintings in parallel threads (the work waits on the network); outcome per image_id."""
    local = threading.local()  # a Session per thread: requests does not promise that one is thread-safe

    def fetch(painting):
        if not hasattr(local, "session"):
            local.session = http_session(retries=retries, pool=2)
        return fetch_painting(local.session, painting, images_dir, size, timeout, retries)

    outcomes, failed = {}, 0
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(fetch, painting): painting for painting in paintings}
        disable = None if progress is None else not progress  # None: tqdm shows a bar only on a terminal
        with tqdm(total=len(futures), unit="img", desc="WikiArt", disable=disable) as bar:
            for future in as_completed(futures):
                outcome = outcomes[futures[future].image_id] = future.result()
                bar.update()
                if outcome.status == "failed":
                    failed += 1
                    bar.set_postfix(failed=failed)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C: drop the queue, let running requests end
    return outcomes


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
        raise ValueError(f"{images} holds images stored at size '{stored}', not '{size_name(size)}'. "
                         f"Fix: rerun with{flag or 'out --resize'}, or use another --out (or delete {images})")
    if not record.exists():
        write_text(record, stored + "\n")


def workers_for(requested: int) -> int:
    """-w as the course's script reads it: a positive count, or -x for all cores minus x (at least 1)."""
    return requested if requested > 0 else max(1, (os.cpu_count() or 1) + requested)


def write_outputs(out: Path, subset, outcomes) -> list:
    kept = [p for p in subset if outcomes[p.image_id].status != "failed"]
    for split, name in (("train", "train.txt"), ("test", "val.txt")):
        write_text(out / name, "".join(f"{p.filename} {p.label}\n" for p in kept if p.split == split))
    write_text(out / "styles.txt", "".join(f"{style}\n" for style in STYLES))
    table = io.StringIO()
    rows = csv.writer(table, lineterminator="\n")
    rows.writerow(["image_id", "url", "cause"])
    rows.writerows([p.image_id, p.image_url, outcomes[p.image_id].cause] for p in subset
                   if outcomes[p.image_id].status == "failed")
    write_text(out / "failures.csv", table.getvalue())
    return kept


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="download_wikiart.py",
        description="Download a subset of the WikiArt style dataset to a directory, and write Caffe ImageData "
                    "file lists (train.txt, val.txt; paths relative to <out>/images/).",
        epilog=f"Environment: {INDEX_ENV} overrides the index URL (default {DEFAULT_INDEX_URL}).")
    ap.add_argument("-s", "--seed", type=int, default=0, help="random seed")
    ap.add_argument("-i", "--images", type=int, default=-1, help="number of images to use (-1 for all [default])")
    ap.add_argument("-w", "--workers", type=int, default=-1,
                    help="num workers used to download images. -x uses (all - x) cores [-1 default]. "
                         "They are threads waiting on the network, so more than the cores is fine (e.g. -w 32)")
    ap.add_argument("--index", metavar="PATH_OR_URL",
                    help=f"the course's wikiart.csv.gz (default: ${INDEX_ENV}, else the course repository's "
                         "copy, cached in the output folder)")
    ap.add_argument("--out", type=Path, default=paths.DATA / "wikiart", help="output folder (default: data/wikiart)")
    ap.add_argument("--resize", type=parse_size, metavar="SIZE",
                    help="store images resized: 256 (shorter side 256, aspect kept) or 256x256 (width x height); "
                         "default: as downloaded")
    ap.add_argument("--timeout", type=float, default=30, help="seconds to wait for a connection or for data [30]")
    ap.add_argument("--retries", type=int, default=3,
                    help="retries per image after a timeout, dropped connection or HTTP 429/5xx [3]")
    args = ap.parse_args(argv)
    if not 0 <= args.seed < 2**32:
        ap.error(f"--seed {args.seed}: must be between 0 and 2**32 - 1 (what np.random.seed takes)")
    if args.timeout <= 0 or args.retries < 0:
        ap.error("--timeout must be positive and --retries at least 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    try:
        rows = read_index(args.index, cache_dir=out, timeout=(args.timeout, args.timeout))
    except WikiArtIndexError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DownloadError as e:
        print(f"error: cannot get the index: {e}", file=sys.stderr)
        return 1
    subset = select_subset(rows, args.seed, args.images)
    if args.images > len(rows):
        print(f"-i {args.images} is more than the {len(rows)} images of the index: using all of them")
    try:
        check_size_record(out, args.resize)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workers = workers_for(args.workers)
    print(f"Downloading {len(subset)} images with {workers} workers...")
    try:
        outcomes = download_all(subset, out / "images", workers=workers, size=args.resize,
                                timeout=(args.timeout, args.timeout), retries=args.retries)
    except KeyboardInterrupt:
        print("interrupted: the images downloaded so far are kept; rerun to continue", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"error: cannot write into {out / 'images'}: {e}", file=sys.stderr)
        return 1
    kept = write_outputs(out, subset, outcomes)
    counts = Counter(o.status for o in outcomes.values())
    causes = Counter(o.cause for o in outcomes.values() if o.status == "failed")
    summary = f"{counts['downloaded']} downloaded, {counts['present']} already present, {counts['failed']} failed"
    if causes:
        summary += f" ({', '.join(f'{cause}: {n}' for cause, n in causes.most_common())}; see {out / 'failures.csv'})"
    print(summary)
    print(f"Writing train/val for {len(kept)} successfully downloaded images.")
    if subset and not kept:
        network = causes["connection"] + causes["timeout"] == len(subset)
        print("error: no image could be downloaded" + (": offline, or the image hosts are down?" if network else ""),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
