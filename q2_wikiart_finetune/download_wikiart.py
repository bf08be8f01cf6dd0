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

A rerun fetches only what is missing, or is in images/ but does not decode completely. Failures (HTTP
errors, timeouts, HTML instead of a picture, truncated files) are counted by cause and skipped.

The parts: wikiart_index.py reads the index and selects the subset; tools/polite_fetch.py fetches
politely (--per-host requests at a time to one site, Retry-After honoured up to --max-retry-after,
backoff with jitter, an identifying User-Agent); images.py checks, stores and takes images from
--from-dir. This file runs them over the subset in threads and writes the lists.
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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from tqdm import tqdm

from q2_wikiart_finetune import images
from q2_wikiart_finetune.wikiart_index import DEFAULT_INDEX_URL, INDEX_ENV, STYLES, read_index, select_subset
from tools import paths
from tools.cli import exit_on, positive_int, seconds
from tools.download import DownloadError
from tools.errors import ToolkitError
from tools.fileio import write_text
from tools.polite_fetch import PoliteFetcher, Politeness, RetryLog

# Names the tool and its purpose, so that a site operator who sees the traffic knows what it is.
USER_AGENT = ("caffe-toolkit-wikiart/1.0 (course exercise downloader: the WikiArt style subset of "
              "VT ECE6504 F15 HW2, caffe-toolkit q2_wikiart_finetune/download_wikiart.py; python-requests)")
ACCEPT = "image/jpeg,image/*;q=0.9"


class NoImages(ToolkitError):
    """Not one image of the subset could be had."""


@dataclass(frozen=True)
class Outcome:
    status: str  # "downloaded", "copied" (from --from-dir), "present" or "failed"
    cause: str = ""  # why it failed: "http 404", "timeout", "not an image", ...
    detail: str = ""  # the local file a --from-dir failure is about


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
    """Fetch the paintings in threads (the work waits on the network): (outcome per image_id, RetryLog).
    Only an image that decodes completely is stored."""
    fetcher = PoliteFetcher(polite, USER_AGENT, ACCEPT)

    def fetch(painting) -> Outcome:
        data, cause = fetcher.get(painting.image_url)
        problem = cause or images.image_problem(data)
        if problem:
            return Outcome("failed", problem)
        images.store(data, images_dir / painting.filename, size)
        return Outcome("downloaded")

    outcomes = run_all(paintings, fetch, workers=workers, desc="WikiArt", progress=progress, stop=fetcher.stop)
    return outcomes, fetcher.log


def take_local(paintings, root: Path, images_dir: Path, *, size, link, workers: int, progress=None):
    """Place the paintings found under `root`; the outcome per image_id of those found (copied or damaged)."""
    found = images.find_local_images(root, (p.image_id for p in paintings))

    def place(painting) -> Outcome:
        src = found[painting.image_id]
        problem = images.place_local(src, images_dir / painting.filename, size, link)
        return Outcome("failed", problem, str(src)) if problem else Outcome("copied")

    local = [p for p in paintings if p.image_id in found]
    return run_all(local, place, workers=workers, desc="from-dir", progress=progress)


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
    ap.add_argument("--resize", type=images.parse_size, metavar="SIZE",
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
    ap.add_argument("--link", choices=images.LINKS,
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
    with exit_on():
        fetch_subset(args)
    return 0


def fetch_subset(args) -> None:
    """The subset's images into <out>/images (those there and whole are kept), then the lists."""
    out, images_dir = args.out, args.out / "images"
    try:
        rows = read_index(args.index, cache_dir=out, timeout=(args.timeout, args.timeout))
    except DownloadError as e:
        raise DownloadError(f"cannot get the index: {e}") from None
    subset = select_subset(rows, args.seed, args.images)
    if args.images > len(rows):
        print(f"-i {args.images} is more than the {len(rows)} images of the index: using all of them")
    images.check_size_record(out, args.resize)
    workers = workers_for(args.workers)
    cpus = min(workers, os.cpu_count() or 1)  # checking and decoding are CPU work
    polite = Politeness((args.timeout, args.timeout), args.retries, args.per_host, args.max_retry_after)
    log = RetryLog()
    try:
        outcomes = {i: Outcome("present") for i in images.whole_images(subset, images_dir, workers=cpus)}
        todo = [p for p in subset if p.image_id not in outcomes]
        damaged = {}
        if args.from_dir:
            local = take_local(todo, args.from_dir, images_dir, size=args.resize, link=args.link, workers=cpus)
            report_local(args.from_dir, len(todo), local, len(outcomes))
            outcomes.update({i: o for i, o in local.items() if o.status != "failed"})
            damaged = {i: o for i, o in local.items() if o.status == "failed"}
            todo = [p for p in todo if p.image_id not in outcomes]
        if args.no_download:
            missing = Outcome("failed", "not in --from-dir" if args.from_dir else "not downloaded (--no-download)")
            outcomes.update({p.image_id: damaged.get(p.image_id, missing) for p in todo})
        elif todo:
            print(f"Downloading {len(todo)} images with {workers} workers, at most {args.per_host} requests at a "
                  "time per host...")
            downloaded, log = download_all(todo, images_dir, workers=workers, size=args.resize, polite=polite)
            outcomes.update(downloaded)
    except KeyboardInterrupt:
        raise KeyboardInterrupt("interrupted: the images stored so far are kept; rerun to continue") from None
    kept = write_outputs(out, subset, outcomes)
    print_summary(out, outcomes, log, args.max_retry_after, args.from_dir)
    print(f"Writing train/val for {len(kept)} successfully downloaded images.")
    if subset and not kept:
        causes = Counter(o.cause for o in outcomes.values())
        network = causes["connection"] + causes["timeout"] == len(subset)
        raise NoImages("no image could be had" + (": offline, or the image hosts are down?" if network else ""))


if __name__ == "__main__":
    sys.exit(main())
