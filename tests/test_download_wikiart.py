"""download_wikiart.py end to end against a local image server with faults, and the index it reads."""

import csv
import gzip
import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from http_fixtures import Body, Drop, FileServer, Stall, Status
from PIL import Image

from q2_wikiart_finetune.wikiart_index import STYLES, WikiArtIndexError, parse_index, read_index, select_subset

REFERENCE_INDEX = Path("/work/shared/reference/wikiart/wikiart.csv.gz")
SCRIPT = REPO / "q2_wikiart_finetune" / "download_wikiart.py"
FAST = ["--timeout", "0.5", "--retries", "1", "-w", "8"]
HEADER = "image_id,page_url,image_url,label,_split"


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


def jpeg(i: int, size=(48, 36)) -> bytes:
    pixels = np.random.RandomState(i).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_rows(server, count):
    """Index rows in the course's format, whose images the server serves (every 4th one is `test`)."""
    rows = []
    for i in range(count):
        image_id = f"artist-{i}_painting-{i}"
        url = server.add(f"/images/{image_id}.jpg", jpeg(i), content_type="image/jpeg")
        rows.append([image_id, f"http://www.wikiart.org/en/{image_id}", url, str(i % 10),
                     "test" if i % 4 == 0 else "train"])
    return rows


def write_index(path, rows, header=HEADER) -> Path:
    text = header + "\n" + "".join(",".join(row) + "\n" for row in rows)
    path.write_bytes(gzip.compress(text.encode()))
    return path


def run(*args, env=None, module=False):
    command = [sys.executable, *(["-m", "q2_wikiart_finetune.download_wikiart"] if module else [str(SCRIPT)])]
    return subprocess.run([*command, *args], cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=60)


def expected_subset(rows, seed, n):
    """The course script's selection, computed the way it does (global seed, then permutation)."""
    np.random.seed(seed)
    perm = np.random.permutation(len(rows))
    return [rows[i] for i in perm[:n]]


def test_download_with_faults_and_rerun(server, tmp_path):
    rows = make_rows(server, 30)
    index_url = server.add("/idx/wikiart.csv.gz", write_index(tmp_path / "index.csv.gz", rows).read_bytes())
    chosen = expected_subset(rows, seed=3, n=20)
    path_of = {row[0]: f"/images/{row[0]}.jpg" for row in rows}
    missing, flaky, stalled, html, truncated, dropped = (row[0] for row in chosen[:6])
    server.set_faults(path_of[missing], [Status(404)] * 9)
    server.set_faults(path_of[flaky], [Status(500)])
    server.set_faults(path_of[stalled], [Stall(10)] * 2)  # the first try and its one retry
    server.set_faults(path_of[html], [Body(b"<html><body>Rate limit</body></html>")])
    server.add(path_of[truncated], jpeg(99)[:1200])  # cut in the middle of the image data
    server.set_faults(path_of[dropped], [Drop(after=100)])
    out = tmp_path / "wikiart"

    proc = run("-s", "3", "-i", "20", "--out", str(out), *FAST, env={"WIKIART_INDEX_URL": index_url})
    assert proc.returncode == 0, proc.stderr
    assert "Downloading 20 images with 8 workers..." in proc.stdout
    assert proc.stdout.strip().endswith("Writing train/val for 16 successfully downloaded images.")
    assert "Traceback" not in proc.stderr

    failed = {missing: "http 404", stalled: "timeout", html: "not an image", truncated: "truncated image"}
    with open(out / "failures.csv") as f:
        listed = {r["image_id"]: (r["url"], r["cause"]) for r in csv.DictReader(f)}
    assert listed == {i: (server.url(path_of[i]), cause) for i, cause in failed.items()}

    kept = [row for row in chosen if row[0] not in failed]
    for split, name in (("train", "train.txt"), ("test", "val.txt")):
        expected = [f"{row[0]}.jpg {row[3]}" for row in kept if row[4] == split]
        assert (out / name).read_text().splitlines() == expected
    for row in kept:
        assert (out / "images" / f"{row[0]}.jpg").read_bytes() == jpeg(rows.index(row))
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{row[0]}.jpg" for row in kept)
    assert (out / "styles.txt").read_text().splitlines() == list(STYLES)
    requested = Counter(r.path for r in server.requests())
    assert set(requested) == {path_of[row[0]] for row in chosen} | {"/idx/wikiart.csv.gz"}  # nothing else
    assert requested[path_of[flaky]] == 2 and requested[path_of[dropped]] == 2 and requested[path_of[stalled]] == 2

    before = len(server.requests())
    again = run("-s", "3", "-i", "20", "--out", str(out), *FAST, env={"WIKIART_INDEX_URL": index_url})
    assert again.returncode == 0, again.stderr
    retried = {r.path for r in server.requests()[before:]}
    assert retried == {path_of[i] for i in failed}  # only the failures, not the index nor the kept images
    assert "16 already present" in again.stdout and "2 downloaded" in again.stdout  # stall and HTML served now
    with open(out / "failures.csv") as f:
        assert {r["image_id"]: r["cause"] for r in csv.DictReader(f)} == {missing: "http 404",
                                                                          truncated: "truncated image"}


def test_resize_all_images_and_size_record(server, tmp_path):
    rows = make_rows(server, 5)
    index = write_index(tmp_path / "index.csv.gz", rows)
    out = tmp_path / "wikiart"
    proc = run("-i", "50", "--index", str(index), "--out", str(out), "--resize", "24", *FAST, module=True)
    assert proc.returncode == 0, proc.stderr
    assert "-i 50 is more than the 5 images of the index: using all of them" in proc.stdout
    assert "Writing train/val for 5 successfully downloaded images." in proc.stdout
    sizes = set()
    for path in (out / "images").glob("*.jpg"):
        with Image.open(path) as image:
            sizes.add(image.size)
    assert sizes == {(32, 24)}
    assert (out / "image_size.txt").read_text().strip() == "24"
    other = run("--index", str(index), "--out", str(out), "--resize", "256x256", *FAST)
    assert other.returncode == 2 and "stored at size '24', not '256x256'" in other.stderr
    assert "--resize 24" in other.stderr and "Traceback" not in other.stderr


@pytest.mark.parametrize("header, rows, message", [
    ("image_id,page_url,image_url,label", [["a", "p", "http://x/a.jpg", "1"]], r"no column _split"),
    (HEADER, [["a", "p", "http://x/a.jpg", "1", "train"], ["b", "p", "http://x/b.jpg", "12", "test"]],
     r"line 3: label '12' of b is outside 0..9"),
    (HEADER, [["../etc", "p", "http://x/a.jpg", "1", "train"]], r"line 2: image_id '../etc' is not usable"),
    (HEADER, [["a", "p", "http://x/a.jpg", "1", "val"]], r"line 2: _split 'val'"),
])
def test_bad_index_is_a_clear_error(tmp_path, header, rows, message):
    index = write_index(tmp_path / "bad.csv.gz", rows, header)
    with pytest.raises(WikiArtIndexError, match=f"bad.csv.gz.*{message}.*Fix: "):
        read_index(index)


def test_bad_index_stops_the_script_before_any_download(server, tmp_path):
    rows = make_rows(server, 3)
    rows[1][3] = "12"
    index = write_index(tmp_path / "bad.csv.gz", rows)
    proc = run("--index", str(index), "--out", str(tmp_path / "out"), *FAST)
    assert proc.returncode == 2
    assert f"{index}, line 3: label '12'" in proc.stderr and "Traceback" not in proc.stderr
    assert server.requests() == [] and not (tmp_path / "out" / "images").exists()


def test_subset_follows_numpy_seeded_permutation():
    rows = list(range(100))
    assert select_subset(rows, 7, 10) == expected_subset(rows, 7, 10)
    assert select_subset(rows, 7, -1) == expected_subset(rows, 7, 100)
    assert select_subset(rows, 7, 500) == expected_subset(rows, 7, 100)


def test_plain_csv_index_parses():
    rows = parse_index(f"{HEADER}\nx_y,p,https://h/x.jpg,9,test\n".encode(), "inline")
    assert rows[0].image_id == "x_y" and rows[0].label == 9 and rows[0].split == "test"
    assert rows[0].filename == "x_y.jpg"


@pytest.mark.skipif(not REFERENCE_INDEX.exists(), reason="the course's wikiart.csv.gz is not on this machine")
def test_reference_index():
    rows = read_index(REFERENCE_INDEX)
    assert len(rows) == 10_000
    assert Counter(r.label for r in rows) == {label: 1000 for label in range(10)}
    assert Counter(r.split for r in rows) == {"train": 8000, "test": 2000}
    first = expected_subset(rows, 0, 5)
    assert select_subset(rows, 0, 5) == first
