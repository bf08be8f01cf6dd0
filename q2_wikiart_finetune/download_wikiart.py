#!/usr/bin/env python
"""Download the course's WikiArt style subset and write the file lists of Caffe's ImageData layer.

    python q2_wikiart_finetune/download_wikiart.py -s 0 -i 2000 -w 16
    python -m q2_wikiart_finetune.download_wikiart --resize 256 --out data/wikiart
    python q2_wikiart_finetune/download_wikiart.py -s 761218 -i 2000 --from-dir ~/wikiart   # images you have

The interface of the course's script (VT ECE6504 F15 HW2, itself Caffe's
examples/finetune_flickr_style/assemble_data.py): the same -s and -i select the same images. It writes,
under --out (default data/wikiart/):

    images/<image_id>.jpg   the paintings, always JPEGs (each checked to decode; written atomically)
    train.txt, val.txt      "<image_id>.jpg <label>" lines; val is the index's `test` split. The paths are
                            relative to images/: give ImageData root_folder: "data/wikiart/images/"
    styles.txt              the label names, one per line, line i is label i
    failures.csv            image_id,url,cause of every image that could not be had in this run
    image_size.txt          the size the images are stored at ('original', '256' or e.g. '256x256')

A rerun fetches only what is missing. Failures (HTTP errors, timeouts, HTML instead of a picture,
truncated files) are counted by cause and skipped.

Politeness. WikiArt blocks clients that download fast, so by default: at most --per-host (4) requests
at a time to one site (uploads0..8.wikiart.org count as one), whatever -w is; a User-Agent that names
this tool; 429 and 503 replies wait the Retry-After they give (seconds or an HTTP-date; the whole
site pauses, since the limit is the client's, not the image's) up to --max-retry-after (60 s): a
longer demand fails that image at once; other 5xx replies, timeouts and dropped connections are
retried after exponential backoff with jitter. --retries bounds the retries of one image, whatever
their cause. The summary says how many retries waited on Retry-After and for how long.

--from-dir DIR takes the subset's images from files you already have: <image_id>.jpg, .jpeg or .png
at any depth under DIR (the shared WikiArt collection files them as <Style>/<image_id>.jpg), any
case of extension. Each is checked to decode (a damaged one is reported and not used), then copied
(or with --link hard|symlink, linked) to images/<image_id>.jpg. images/ holds JPEGs only: a PNG, and
any file when --resize is given, is re-encoded as a JPEG, never linked. The images not found are then
downloaded, unless --no-download. Nothing under DIR is ever written, renamed or deleted.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file (python q2_wikiart_finetune/download_wikiart.py): Python put this folder on sys.path,
    # not the repository root that `tools` and `q2_wikiart_finetune` live in.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import csv
import io
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
import urllib3
from PIL import Image, ImageOps, UnidentifiedImageError
from requests.adapters import HTTPAdapter
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
from tools.cli import positive_int, seconds
from tools.download import BACKOFF, MAX_BACKOFF, RETRY_STATUSES, DownloadError, error_cause
from tools.fileio import atomic_path, write_bytes, write_text

ORIGINAL = "original"
# Names the tool and its purpose, so that a site operator who sees the traffic knows what it is.
USER_AGENT = ("caffe-toolkit-wikiart/1.0 (course exercise downloader: the WikiArt style subset of "
              "VT ECE6504 F15 HW2, caffe-toolkit q2_wikiart_finetune/download_wikiart.py; python-requests)")
RETRY_AFTER_STATUSES = (429, 503)  # the replies whose Retry-After says when to come back
MAX_REDIRECTS = 10
JPEG_QUALITY = 90
LOCAL_SUFFIXES = (".jpg", ".jpeg", ".png")
LINKS = ("hard", "symlink")


@dataclass(frozen=True)
class Outcome:
    status: str  # "downloaded", "copied" (from --from-dir), "present" or "failed"
    cause: str = ""  # why it failed: "http 404", "timeout", "not an image", ...
    detail: str = ""  # the local file a --from-dir failure is about


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


def looks_like_html(data: bytes) -> bool:
    return data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


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

    images/ holds JPEGs only, so that <image_id>.jpg is what its name says (a PNG from --from-dir, or
    one a server sent, is converted).
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


def is_present(path: Path) -> bool:
    """An image from an earlier run. Files are only written whole and checked, so a header check suffices."""
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


# ---- politeness: per-host limits, Retry-After, backoff -------------------------------------------------


@dataclass(frozen=True)
class Politeness:
    timeout: tuple  # (connect, read) seconds
    retries: int  # retries of one image, whatever their cause
    per_host: int  # requests at a time to one host
    max_retry_after: float  # the longest Retry-After worth waiting for, in seconds


def retry_after_seconds(value, now=None):
    """The seconds a Retry-After header asks for (delta-seconds or an HTTP-date), or None when unreadable."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():  # not str.isdigit alone: it accepts "²"
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with jitter: workers that failed together do not all come back together."""
    delay = min(MAX_BACKOFF, BACKOFF * 2 ** attempt)
    return delay / 2 + random.uniform(0, delay / 2)


def host_of(url: str) -> str:
    """The site a request counts against: WikiArt serves images from uploads0..uploads8.wikiart.org, one
    site that sees all of them, so a name counts by its last two labels; an address counts with its port."""
    parts = urlsplit(url)
    name = (parts.hostname or "").lower()
    if name.replace(".", "").isdigit() or ":" in name:  # IPv4 or IPv6: no labels to group by
        return f"{name}:{parts.port or parts.scheme}"
    return ".".join(name.split(".")[-2:])


class HostGate:
    """One host's share of the traffic: at most `limit` requests at a time, and the pause it last asked for."""

    def __init__(self, limit: int):
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._resume_at = 0.0  # time.monotonic()

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    @contextlib.contextmanager
    def slot(self, stop: threading.Event):
        """Hold one of the host's slots, after the host's pause (if any) is over or `stop` is set."""
        with self._slots:
            while not stop.is_set():
                with self._lock:
                    wait = self._resume_at - time.monotonic()
                if wait <= 0:
                    break
                stop.wait(wait)
            yield


class RetryLog:
    """What the retries cost, for the summary; shared by the worker threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.retry_after_waits = 0
        self.retry_after_seconds = 0.0
        self.over_cap = 0
        self.backoffs = 0

    def waited(self, seconds: float) -> None:
        with self._lock:
            self.retry_after_waits += 1
            self.retry_after_seconds += seconds

    def refused(self) -> None:
        with self._lock:
            self.over_cap += 1

    def backed_off(self) -> None:
        with self._lock:
            self.backoffs += 1

    def summary(self, cap: float):
        parts = []
        if self.retry_after_waits:
            parts.append(f"{self.retry_after_waits} waited on Retry-After ({self.retry_after_seconds:.1f} s in all)")
        if self.over_cap:
            parts.append(f"{self.over_cap} Retry-After over the {cap:g} s cap (not waited for: failed)")
        if self.backoffs:
            parts.append(f"{self.backoffs} after a backoff (5xx, timeout or dropped connection)")
        return "Retries: " + "; ".join(parts) if parts else None


def image_session(pool: int = 4) -> requests.Session:
    """A Session without urllib3 retries (ours count and cap them), an identifying User-Agent, redirects followed."""
    adapter = HTTPAdapter(max_retries=0, pool_connections=pool, pool_maxsize=pool)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = MAX_REDIRECTS
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept"] = "image/jpeg,image/*;q=0.9"
    return session


def name_unresolved(exc: BaseException) -> bool:
    """Offline or a host that no longer exists: waiting does not help."""
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # inside urllib3's MaxRetryError
    return isinstance(reason, urllib3.exceptions.NameResolutionError)


def worth_retrying(exc: requests.RequestException) -> bool:
    transient = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    return isinstance(exc, transient) and not name_unresolved(exc)


class Fetcher:
    """Downloads paintings politely (see the module's docstring); one per run, shared by the worker threads."""

    def __init__(self, images_dir: Path, size, polite: Politeness):
        self.images_dir, self.size, self.polite = images_dir, size, polite
        self.log = RetryLog()
        self.stop = threading.Event()  # set on Ctrl-C: waits end at once
        self._gates: dict[str, HostGate] = {}
        self._gates_lock = threading.Lock()
        self._local = threading.local()  # a Session per thread: requests does not promise that one is thread-safe

    def gate(self, url: str) -> HostGate:
        with self._gates_lock:
            return self._gates.setdefault(host_of(url), HostGate(self.polite.per_host))

    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = image_session()
        return self._local.session

    def fetch(self, painting) -> Outcome:
        data, cause = self.get(painting.image_url)
        if cause:
            return Outcome("failed", cause)
        problem = image_problem(data)
        if problem:
            return Outcome("failed", problem)
        store(data, self.images_dir / painting.filename, self.size)
        return Outcome("downloaded")

    def get(self, url: str):
        """(body, None) or (None, cause), after up to `retries` retries."""
        polite, gate = self.polite, self.gate(url)
        for attempt in range(polite.retries + 1):
            last = attempt == polite.retries
            if self.stop.is_set():
                return None, "interrupted"
            reply = error = None
            with gate.slot(self.stop):
                try:
                    reply = self.session().get(url, timeout=polite.timeout)
                except requests.TooManyRedirects:
                    return None, f"more than {MAX_REDIRECTS} redirects"
                except requests.RequestException as e:
                    error = e
            if error is not None:
                if last or not worth_retrying(error):
                    return None, error_cause(error)
            elif reply.status_code == 200:
                return reply.content, None
            else:
                cause = f"http {reply.status_code}"
                wait = (retry_after_seconds(reply.headers.get("Retry-After"))
                        if reply.status_code in RETRY_AFTER_STATUSES else None)
                if wait is not None:
                    if wait > polite.max_retry_after:
                        self.log.refused()
                        return None, f"{cause} (Retry-After {wait:.0f} s over the {polite.max_retry_after:g} s cap)"
                    if last:
                        return None, cause
                    gate.pause(wait)  # every request to this host waits, not just this one's retry
                    self.log.waited(wait)
                    continue
                if reply.status_code not in RETRY_STATUSES or last:
                    return None, cause
            self.log.backed_off()
            self.stop.wait(backoff_delay(attempt))
        raise AssertionError("unreachable: the last attempt returns")


# ---- running many: the thread pool and its progress bar ------------------------------------------------


def run_all(paintings, work, *, workers: int, desc: str, progress=None, stop=None) -> dict[str, Outcome]:
    """work(painting) -> Outcome for each painting, in `workers` threads; the outcome per image_id."""
    outcomes, failed = {}, 0
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(work, painting): painting for painting in paintings}
        disable = None if progress is None else not progress  # None: tqdm shows a bar only on a terminal
        with tqdm(total=len(futures), unit="img", desc=desc, disable=disable) as bar:
            for future in as_completed(futures):
                outcome = outcomes[futures[future].image_id] = future.result()
                bar.update()
                if outcome.status == "failed":
                    failed += 1
                    bar.set_postfix(failed=failed)
    finally:
        if stop is not None:
            stop.set()  # on Ctrl-C, waiting retries give up at once
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C: drop the queue, let running requests end
    return outcomes


def download_all(paintings, images_dir: Path, *, workers: int, size, polite: Politeness, progress=None):
    """Fetch the paintings in threads (the work waits on the network): (outcome per image_id, RetryLog)."""
    fetcher = Fetcher(images_dir, size, polite)
    outcomes = run_all(paintings, fetcher.fetch, workers=workers, desc="WikiArt", progress=progress,
                       stop=fetcher.stop)
    return outcomes, fetcher.log


# ---- --from-dir: images the user already has -----------------------------------------------------------


class LinkError(OSError):
    """A --link that the file system refuses; the message says what to use instead."""


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


def place_local(src: Path, dest: Path, size, link) -> Outcome:
    """Put the local image `src` at `dest` as a JPEG: linked, copied, or re-encoded (a PNG, or at `size`)."""
    data = src.read_bytes()
    problem = image_problem(data)
    if problem:
        return Outcome("failed", f"damaged in --from-dir: {problem}", str(src))
    if link and size is None and is_jpeg(data):
        link_into(src, dest, link)
    else:
        store(data, dest, size)
    return Outcome("copied")


def take_local(paintings, root: Path, images_dir: Path, *, size, link, workers: int, progress=None):
    """Place the paintings found under `root`; the outcome per image_id of those found (copied or damaged)."""
    found = find_local_images(root, (p.image_id for p in paintings))
    local = [p for p in paintings if p.image_id in found]

    def work(painting):
        return place_local(found[painting.image_id], images_dir / painting.filename, size, link)

    return run_all(local, work, workers=workers, desc="from-dir", progress=progress)


def report_local(root: Path, wanted: int, outcomes: dict[str, Outcome], already: int) -> None:
    """The coverage line ("Found 1,612 of 2,000 in DIR; 388 missing") and the damaged files by name."""
    damaged = [o for o in outcomes.values() if o.status == "failed"]
    usable = len(outcomes) - len(damaged)
    line = f"Found {usable:,} of {wanted:,} in {root}; {wanted - usable:,} missing"
    if damaged:
        line += f" ({len(damaged):,} of them damaged there, not used)"
    if already:
        line += f". {already:,} more were already in images/ from an earlier run"
    print(line)
    for outcome in sorted(damaged, key=lambda o: o.detail)[:10]:
        print(f"  not used: {outcome.detail} ({outcome.cause.split(': ', 1)[-1]})")
    if len(damaged) > 10:
        print(f"  ... and {len(damaged) - 10} more")


# ---- outputs and the command line -----------------------------------------------------------------------


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


def image_count(text: str) -> int:
    """-i: a positive count, or -1 for the whole index (the course's meaning); 0 and other negatives are errors."""
    n = int(text)
    if n > 0 or n == -1:
        return n
    raise argparse.ArgumentTypeError(f"{n}: give a positive number of images, or -1 for all of the index")


def worker_count(text: str) -> int:
    n = int(text)
    if n == 0:
        raise argparse.ArgumentTypeError("0 workers would download nothing: give a positive count (e.g. 16), "
                                         "or -x for all cores but x (at least 1)")
    return n


def is_within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="download_wikiart.py",
        description="Download a subset of the WikiArt style dataset to a directory (or take it from image files "
                    "you have, --from-dir), and write Caffe ImageData file lists (train.txt, val.txt; paths "
                    "relative to <out>/images/). Polite by default: a few requests at a time per host, an "
                    "identifying User-Agent, Retry-After honoured up to a cap, backoff with jitter.",
        epilog=f"Environment: {INDEX_ENV} overrides the index URL (default {DEFAULT_INDEX_URL}).")
    ap.add_argument("-s", "--seed", type=int, default=0, help="random seed")
    ap.add_argument("-i", "--images", type=image_count, default=-1,
                    help="number of images to use (-1 for all [default]; 0 and other negatives are errors)")
    ap.add_argument("-w", "--workers", type=worker_count, default=-1,
                    help="num workers used to download images. -x uses (all - x) cores, at least 1 [-1 default]. "
                         "They are threads waiting on the network, so more than the cores is fine (e.g. -w 32); "
                         "--per-host still limits what one host gets")
    ap.add_argument("--index", metavar="PATH_OR_URL",
                    help=f"the course's wikiart.csv.gz (default: ${INDEX_ENV}, else the course repository's "
                         "copy, cached in the output folder)")
    ap.add_argument("--out", type=Path, default=paths.DATA / "wikiart", help="output folder (default: data/wikiart)")
    ap.add_argument("--resize", type=parse_size, metavar="SIZE",
                    help="store images resized: 256 (shorter side 256, aspect kept) or 256x256 (width x height); "
                         "default: as downloaded")
    ap.add_argument("--timeout", type=float, default=30, help="seconds to wait for a connection or for data [30]")
    ap.add_argument("--retries", type=int, default=3,
                    help="retries per image, whatever the cause: a timeout, a dropped connection, HTTP 429/5xx [3]")
    ap.add_argument("--per-host", type=positive_int, default=4, metavar="N",
                    help="at most N requests at a time to one site (uploads0..8.wikiart.org are one), "
                         "whatever -w is [4]")
    ap.add_argument("--max-retry-after", type=seconds, default=60, metavar="SECONDS",
                    help="wait at most this long when a 429/503 reply's Retry-After asks to; a longer demand fails "
                         "the image at once (listed in failures.csv) [60]")
    ap.add_argument("--from-dir", type=Path, metavar="DIR",
                    help="take the subset's images from files you have: <image_id>.jpg/.jpeg/.png at any depth "
                         "under DIR (e.g. the WikiArt collection's <Style>/<image_id>.jpg); each is checked to "
                         "decode and copied (PNGs converted to JPEG); the rest are downloaded. DIR is only read")
    ap.add_argument("--link", choices=LINKS,
                    help="with --from-dir: hard-link or symlink JPEGs into <out>/images instead of copying them "
                         "(PNGs, and every file under --resize, are still re-encoded copies)")
    ap.add_argument("--no-download", action="store_true",
                    help="download no image: use only what is already in <out>/images and --from-dir (the images "
                         "not there are listed in failures.csv)")
    args = ap.parse_args(argv)
    if not 0 <= args.seed < 2**32:
        ap.error(f"--seed {args.seed}: must be between 0 and 2**32 - 1 (what np.random.seed takes)")
    if args.timeout <= 0 or args.retries < 0:
        ap.error("--timeout must be positive and --retries at least 0")
    if args.link and not args.from_dir:
        ap.error("--link only applies with --from-dir DIR (it links DIR's files into <out>/images)")
    if args.from_dir:
        if not args.from_dir.is_dir():
            ap.error(f"--from-dir {args.from_dir}: no such folder. Fix: give the folder that holds your WikiArt "
                     "images (e.g. the one with Impressionism/, Baroque/, ...)")
        if is_within(args.out / "images", args.from_dir):
            ap.error(f"--out {args.out}: its images/ folder is inside --from-dir {args.from_dir}, which is never "
                     "written to. Fix: choose an --out outside that folder")
    return args


def print_summary(out: Path, outcomes, log: RetryLog, cap: float, from_dir) -> None:
    counts = Counter(o.status for o in outcomes.values())
    causes = Counter(o.cause for o in outcomes.values() if o.status == "failed")
    copied = f"{counts['copied']} copied from {from_dir}, " if from_dir else ""
    summary = (f"{counts['downloaded']} downloaded, {copied}{counts['present']} already present, "
               f"{counts['failed']} failed")
    if causes:
        summary += f" ({', '.join(f'{cause}: {n}' for cause, n in causes.most_common())}; see {out / 'failures.csv'})"
    print(summary)
    retries = log.summary(cap)
    if retries:
        print(retries)


def main(argv=None) -> int:
    args = parse_args(argv)
    out, images_dir = args.out, args.out / "images"
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
    polite = Politeness((args.timeout, args.timeout), args.retries, args.per_host, args.max_retry_after)
    log = RetryLog()
    try:
        outcomes = {p.image_id: Outcome("present") for p in subset if is_present(images_dir / p.filename)}
        todo = [p for p in subset if p.image_id not in outcomes]
        if args.from_dir:
            local = take_local(todo, args.from_dir, images_dir, size=args.resize, link=args.link,
                               workers=min(workers, os.cpu_count() or 1))  # decoding: CPU work
            report_local(args.from_dir, len(todo), local, len(outcomes))
            outcomes.update({i: o for i, o in local.items() if o.status != "failed"})
            damaged = {i: o for i, o in local.items() if o.status == "failed"}
            todo = [p for p in todo if p.image_id not in outcomes]
        else:
            damaged = {}
        if args.no_download:
            missing = Outcome("failed", "not in --from-dir" if args.from_dir else "not downloaded (--no-download)")
            outcomes.update({p.image_id: damaged.get(p.image_id, missing) for p in todo})
        elif todo:
            print(f"Downloading {len(todo)} images with {workers} workers, at most {args.per_host} requests at a "
                  "time per host...")
            downloaded, log = download_all(todo, images_dir, workers=workers, size=args.resize, polite=polite)
            outcomes.update(downloaded)
    except KeyboardInterrupt:
        print("interrupted: the images stored so far are kept; rerun to continue", file=sys.stderr)
        return 130
    except LinkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot write into {images_dir}: {e}", file=sys.stderr)
        return 1
    kept = write_outputs(out, subset, outcomes)
    print_summary(out, outcomes, log, args.max_retry_after, args.from_dir)
    print(f"Writing train/val for {len(kept)} successfully downloaded images.")
    if subset and not kept:
        causes = Counter(o.cause for o in outcomes.values())
        network = causes["connection"] + causes["timeout"] == len(subset)
        print("error: no image could be had" + (": offline, or the image hosts are down?" if network else ""),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
