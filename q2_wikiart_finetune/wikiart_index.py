"""The course's WikiArt index (wikiart.csv.gz): reading it, checking it, and the seeded subset everyone shares.

    rows = read_index()                            # the course repository's file, cached in data/wikiart/
    rows = read_index("path/or/url/wikiart.csv.gz")
    subset = select_subset(rows, seed=0, n=2000)   # what `download_wikiart.py -s 0 -i 2000` fetches

The index has a header and one row per painting: image_id,page_url,image_url,label,_split (the
course's file: 10,000 rows, 1,000 per style, _split 8,000 train / 2,000 test). The subset is the
course script's: np.random.seed(seed), then the first n rows of np.random.permutation(len(index)).

A downloaded index is cached only once it parses: a mirror's error page served with 200 is refused
(kept aside as <name>.rejected), and a cached copy that no longer parses (one an older version cached,
or damaged since) is moved aside as <name>.damaged and downloaded again.
"""

import csv
import gzip
import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from tools import paths
from tools.download import download, looks_like_html
from tools.errors import ToolkitError

COLUMNS = ("image_id", "page_url", "image_url", "label", "_split")
STYLES = ("Art Nouveau (Modern)", "Baroque", "Expressionism", "Impressionism", "Neoclassicism",
          "Post-Impressionism", "Realism", "Romanticism", "Surrealism", "Symbolism")  # the course's styles.csv
SPLITS = ("train", "test")
DEFAULT_INDEX_URL = ("https://raw.githubusercontent.com/batra-mlp-lab/VT-F15-ECE6504-HW2/master/"
                     "2_finetuning-alexnet-wikiart-style/wikiart.csv.gz")
DEFAULT_INDEX_SHA1 = "1aa9345174278efe87e1bdbec23363381039c4d7"  # that file as of the course (2015)
INDEX_ENV = "WIKIART_INDEX_URL"
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # image ids become file names


class WikiArtIndexError(ToolkitError, ValueError):
    """The index is missing or not in the course's format; the message names the file, the row and the fix."""

    def __init__(self, source, problem: str, fix: str, line: int | None = None):
        super().__init__(f"{source}{'' if line is None else f', line {line}'}: {problem}. Fix: {fix}")
        self.problem = problem  # without the file and the fix: what a download's check reports


@dataclass(frozen=True)
class Painting:
    image_id: str
    image_url: str
    label: int
    split: str  # "train" or "test" (the validation set)

    @property
    def filename(self) -> str:
        """The image's file name in images/, as the course's script names it."""
        return f"{self.image_id}.jpg"


def is_url(source) -> bool:
    return urlsplit(str(source)).scheme in ("http", "https")


def default_index() -> str:
    return os.environ.get(INDEX_ENV) or DEFAULT_INDEX_URL


def read_index(path_or_url=None, cache_dir=None, *, timeout=(10, 60), progress=None) -> list[Painting]:
    """The index's rows, checked; a URL is downloaded once into `cache_dir` (default data/wikiart/)."""
    source = str(path_or_url or default_index())
    if not is_url(source):
        path = Path(source)
        if not path.is_file():
            raise WikiArtIndexError(path, "no such index file", "pass the course's wikiart.csv.gz with --index (a "
                                    f"path or URL), or leave --index out to fetch it from {DEFAULT_INDEX_URL}")
        return parse_index(path.read_bytes(), source)
    path = fetch_index(source, cache_dir, timeout=timeout, progress=progress)
    # Named by the cached file, so that a damaged one can be found; fetch_index made sure it parses.
    return parse_index(path.read_bytes(), f"{path} (from {source})")


def cache_path(url, cache_dir=None) -> Path:
    """Where the index downloaded from `url` is kept: the course's own file by its name, another URL by a hash."""
    cache_dir = Path(cache_dir) if cache_dir else paths.DATA / "wikiart"
    if url == DEFAULT_INDEX_URL:
        return cache_dir / "wikiart.csv.gz"
    tag = hashlib.sha1(url.encode()).hexdigest()[:10]
    return cache_dir / f"index-{tag}-{Path(urlsplit(url).path).name or 'index.csv'}"


def fetch_index(url, cache_dir=None, *, timeout=(10, 60), progress=None) -> Path:
    """Download the index once, cached only when it parses (a cached one that does not is moved aside and
    downloaded again). The course's own file is also checked by SHA-1."""
    sha1 = DEFAULT_INDEX_SHA1 if url == DEFAULT_INDEX_URL else None
    return download(url, cache_path(url, cache_dir), sha1=sha1, check=index_problem, desc="wikiart index",
                    timeout=timeout, progress=progress, url_env=INDEX_ENV)


def index_problem(path) -> str | None:
    """What makes the file at `path` not an index in the course's format, or None when it parses."""
    try:
        parse_index(Path(path).read_bytes(), str(path))
    except WikiArtIndexError as e:
        return e.problem
    return None


def parse_index(data: bytes, source: str = "index") -> list[Painting]:
    """Rows of a gzip or plain CSV index, checked: columns, labels 0..9, splits, unique file-safe ids."""
    again = "get the course's wikiart.csv.gz again, or pass another --index"
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise WikiArtIndexError(source, f"not a readable gzip file ({e})", again) from None
    if looks_like_html(data):
        raise WikiArtIndexError(source, "an HTML page (a server's error page?), not the course's CSV index", again)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise WikiArtIndexError(source, f"not UTF-8 text ({e}), so not the course's CSV index", again) from None
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise WikiArtIndexError(source, f"no column {', '.join(missing)} (header: {','.join(header)[:80] or 'empty'})",
                                f"the index needs the course's columns {','.join(COLUMNS)}")
    col = {name: header.index(name) for name in COLUMNS}
    rows, seen = [], set()
    for fields in reader:
        if not fields:
            continue
        line = reader.line_num

        def bad(problem, fix="correct that row, or use the course's wikiart.csv.gz", line=line):
            return WikiArtIndexError(source, problem, fix, line)

        if len(fields) != len(header):
            raise bad(f"{len(fields)} fields, the header has {len(header)}")
        image_id, url, label, split = (fields[col[c]].strip() for c in ("image_id", "image_url", "label", "_split"))
        if not SAFE_ID.fullmatch(image_id):
            raise bad(f"image_id '{image_id}' is not usable as a file name (letters, digits, '.', '_', '-')")
        if image_id in seen:
            raise bad(f"image_id '{image_id}' appears twice")
        if not label.isdigit() or int(label) >= len(STYLES):
            raise bad(f"label '{label}' of {image_id} is outside 0..{len(STYLES) - 1} (the course's {len(STYLES)} "
                      "styles)", "labels are 0-9 as in styles.txt; correct the row or use the course's index")
        if split not in SPLITS:
            raise bad(f"_split '{split}' of {image_id} is neither 'train' nor 'test'")
        if not is_url(url):
            raise bad(f"image_url '{url}' of {image_id} is not an http(s) URL")
        seen.add(image_id)
        rows.append(Painting(image_id, url, int(label), split))
    if not rows:
        raise WikiArtIndexError(source, "no rows after the header", "pass the course's wikiart.csv.gz")
    return rows


def select_subset(rows, seed: int, n: int) -> list:
    """The first `n` rows (all when n <= 0, as the course's script) in the order of the seeded permutation.

    RandomState(seed).permutation draws the same numbers as np.random.seed(seed) followed by
    np.random.permutation, without touching NumPy's global generator.
    """
    order = np.random.RandomState(seed).permutation(len(rows))
    if 0 < n < len(rows):
        order = order[:n]
    return [rows[i] for i in order]
