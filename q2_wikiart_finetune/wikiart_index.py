"""The course's WikiArt index (wikiart.csv.gz): reading it, checking it, and the seeded subset everyone shares.

    rows = read_index()                            # the course repository's file, cached in data/wikiart/
    rows = read_index("path/or/url/wikiart.csv.gz")
    subset = select_subset(rows, seed=0, n=2000)   # what `download_wikiart.py -s 0 -i 2000` fetches

The index has a header and one row per painting: image_id,page_url,image_url,label,_split (the
course's file: 10,000 rows, 1,000 per style, _split 8,000 train / 2,000 test). The subset is the
course script's: np.random.seed(seed), then the first n rows of np.random.permutation(len(index)).
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
from tools.download import download
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
    if is_url(source):
        path = fetch_index(source, cache_dir, timeout=timeout, progress=progress)
    else:
        path = Path(source)
        if not path.is_file():
            raise WikiArtIndexError(f"no index file at {path}. Fix: pass the course's wikiart.csv.gz with --index "
                                    f"(a path or URL), or leave --index out to fetch it from {DEFAULT_INDEX_URL}")
    return parse_index(path.read_bytes(), source)


def fetch_index(url, cache_dir=None, *, timeout=(10, 60), progress=None) -> Path:
    """Download the index once. The course's own file is checked by SHA-1; another URL gets its own cache name."""
    cache_dir = Path(cache_dir) if cache_dir else paths.DATA / "wikiart"
    if url == DEFAULT_INDEX_URL:
        name, sha1 = "wikiart.csv.gz", DEFAULT_INDEX_SHA1
    else:
        tag = hashlib.sha1(url.encode()).hexdigest()[:10]
        name, sha1 = f"index-{tag}-{Path(urlsplit(url).path).name or 'index.csv'}", None
    return download(url, cache_dir / name, sha1=sha1, desc="wikiart index", timeout=timeout, progress=progress,
                    url_env=INDEX_ENV)


def parse_index(data: bytes, source: str = "index") -> list[Painting]:
    """Rows of a gzip or plain CSV index, checked: columns, labels 0..9, splits, unique file-safe ids."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise WikiArtIndexError(f"{source}: not a readable gzip file ({e}). Fix: delete it and download it "
                                    "again, or pass another --index") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise WikiArtIndexError(f"{source}: not UTF-8 text ({e}); is it the course's wikiart.csv.gz?") from None
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise WikiArtIndexError(f"{source}: no column {', '.join(missing)} (header: {','.join(header) or 'empty'}). "
                                f"Fix: the index needs the course's columns {','.join(COLUMNS)}")
    col = {name: header.index(name) for name in COLUMNS}
    rows, seen = [], set()
    for fields in reader:
        if not fields:
            continue
        line = reader.line_num

        def bad(problem, fix="correct that row, or use the course's wikiart.csv.gz", line=line):
            return WikiArtIndexError(f"{source}, line {line}: {problem}. Fix: {fix}")

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
        raise WikiArtIndexError(f"{source}: no rows after the header. Fix: pass the course's wikiart.csv.gz")
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
