"""download_wikiart.py end to end against a local image server with faults, and the index it reads."""

import csv
import gzip
import io
import os
import re
import subprocess
import sys
from collections import Counter
from email.utils import formatdate
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from http_fixtures import Body, Drop, FileServer, Stall, Status
from PIL import Image
from real_formats.wikiart_servers import WikiArtHosts

from q2_wikiart_finetune import download_wikiart
from q2_wikiart_finetune.wikiart_index import (
    STYLES,
    WikiArtIndexError,
    cache_path,
    index_problem,
    parse_index,
    read_index,
    select_subset,
)
from tools.polite_fetch import host_of, retry_after_seconds

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
    assert "Downloading 20 images with 8 workers, at most 4 requests at a time per host..." in proc.stdout
    assert proc.stdout.strip().endswith("Writing train/val for 16 successfully downloaded images.")
    assert "Traceback" not in proc.stderr

    failed = {missing: "http 404", stalled: "timeout", html: "html page, not an image", truncated: "truncated image"}
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
    assert other.returncode == 1 and "stored at size '24', not '256x256'" in other.stderr
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
    assert proc.returncode == 1  # a failure with its fix; 2 is for usage errors
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
    assert index_problem(REFERENCE_INDEX) is None  # what a download of it is checked by before it is cached


# ---- the index a mirror serves: validated before it is cached, and when the cache is read -----------------

ERROR_PAGE = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>try later</body></html>\n"


def test_an_error_page_served_as_the_index_is_never_cached(server, tmp_path):
    rows = make_rows(server, 8)
    index = write_index(tmp_path / "index.csv.gz", rows).read_bytes()
    url = server.add("/idx/wikiart.csv.gz", index, faults=[Body(ERROR_PAGE)] * 2)  # 200, then fixed after two
    out = tmp_path / "wikiart"
    cached = cache_path(url, out)
    kept = [f"kept as {cached}.rejected", f"the same file as {cached}.rejected, kept from an earlier try"]
    for kept_where in kept:  # the second run receives the same page: no second copy of it is kept
        proc = run("--out", str(out), *FAST, env={"WIKIART_INDEX_URL": url})
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.strip() == (
            f"error: cannot get the index: {url} sent no usable file: an HTML page (a server's error page?), not "
            f"the course's CSV index ({kept_where}; nothing was cached). Fix: run again once the server is fixed; "
            "if it fails the same way, check the URL or set WIKIART_INDEX_URL to a mirror's URL")
        assert not cached.exists() and not (out / "images").exists()
    assert (out / f"{cached.name}.rejected").read_bytes() == ERROR_PAGE  # kept once, to look at
    assert not (out / f"{cached.name}.rejected.2").exists()

    fixed = run("--out", str(out), *FAST, env={"WIKIART_INDEX_URL": url})  # the server sends the index now
    assert fixed.returncode == 0, fixed.stderr
    assert cached.read_bytes() == index
    assert "Writing train/val for 8 successfully downloaded images." in fixed.stdout


@pytest.mark.parametrize("damage", ["error page", "cut short"])
def test_a_damaged_cached_index_is_moved_aside_and_fetched_again(server, tmp_path, damage):
    rows = make_rows(server, 8)
    index = write_index(tmp_path / "index.csv.gz", rows).read_bytes()
    url = server.add("/idx/wikiart.csv.gz", index)
    out = tmp_path / "wikiart"
    cached = cache_path(url, out)
    cached.parent.mkdir(parents=True)
    bad = ERROR_PAGE if damage == "error page" else index[: len(index) // 2]  # as an older version cached it
    cached.write_bytes(bad)
    proc = run("--out", str(out), *FAST, env={"WIKIART_INDEX_URL": url})
    assert proc.returncode == 0, proc.stderr
    problem = "an HTML page" if damage == "error page" else "not a readable gzip file"
    assert f"note: {cached} is not usable ({problem}" in proc.stderr
    assert f"moved it to {cached}.damaged and downloading it again" in proc.stderr
    assert (out / f"{cached.name}.damaged").read_bytes() == bad  # kept, never deleted
    assert cached.read_bytes() == index
    assert "Writing train/val for 8 successfully downloaded images." in proc.stdout


def test_a_damaged_cached_index_while_the_server_is_still_broken_is_refused(server, tmp_path):
    rows = make_rows(server, 4)
    url = server.add("/idx/wikiart.csv.gz", write_index(tmp_path / "index.csv.gz", rows).read_bytes(),
                     faults=[Body(ERROR_PAGE)])
    out = tmp_path / "wikiart"
    cached = cache_path(url, out)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(ERROR_PAGE)
    proc = run("--out", str(out), *FAST, env={"WIKIART_INDEX_URL": url})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    note, error = proc.stderr.strip().splitlines()
    assert note.startswith(f"note: {cached} is not usable (an HTML page")
    assert error.startswith(f"error: cannot get the index: {url} sent no usable file: an HTML page")
    assert f"(kept as {cached}.rejected; nothing was cached). Fix: " in error
    assert not cached.exists() and (out / f"{cached.name}.damaged").read_bytes() == ERROR_PAGE


# ---- images already in images/: counted only when they decode completely ---------------------------------


@pytest.mark.parametrize("rerun", [[], ["--no-download"]])
def test_a_truncated_image_in_images_is_moved_aside_and_fetched_again(server, tmp_path, rerun):
    rows = make_rows(server, 8)
    index = write_index(tmp_path / "index.csv.gz", rows)
    out = tmp_path / "wikiart"
    first = run("--index", str(index), "--out", str(out), *FAST)
    assert first.returncode == 0, first.stderr
    image_id = rows[0][0]  # in the index's test split: val.txt
    stored = out / "images" / f"{image_id}.jpg"
    whole = stored.read_bytes()
    assert whole == jpeg(0) and f"{image_id}.jpg 0" in (out / "val.txt").read_text().splitlines()
    cut = whole[: len(whole) // 2]  # a real JPEG cut short, as a run killed mid-write by the course's script leaves
    stored.write_bytes(cut)
    with Image.open(stored) as image:
        image.verify()  # the header alone says nothing is wrong
    before = len(server.requests())

    proc = run("--index", str(index), "--out", str(out), *FAST, *rerun)
    assert proc.returncode == 0, proc.stderr
    assert (f"note: {stored} does not decode completely (truncated image): moved it to {image_id}.jpg.damaged; "
            "fetching it again") in proc.stderr
    assert (out / "images" / f"{image_id}.jpg.damaged").read_bytes() == cut  # kept, never deleted
    val = (out / "val.txt").read_text().splitlines()
    if rerun:  # nothing fetched: the image is listed as missing, not in val.txt
        assert len(server.requests()) == before and not stored.exists()
        assert f"{image_id}.jpg 0" not in val and failures(out) == {image_id: "not downloaded (--no-download)"}
        assert "0 downloaded, 7 already present, 1 failed" in proc.stdout
    else:
        assert [r.path for r in server.requests()[before:]] == [f"/images/{image_id}.jpg"]
        assert stored.read_bytes() == whole and f"{image_id}.jpg 0" in val and failures(out) == {}
        assert "1 downloaded, 7 already present, 0 failed" in proc.stdout


# ---- politeness against the servers as they behave today ----------------------------------------------


def index_of(urls: dict, tmp_path, labels=None) -> Path:
    """An index of image_id -> URL (labels by position, every 4th row `test`)."""
    rows = [[image_id, f"http://www.wikiart.org/en/{image_id}", url, str(i % 10), "test" if i % 4 == 0 else "train"]
            for i, (image_id, url) in enumerate(urls.items())]
    return write_index(tmp_path / "index.csv.gz", rows)


def failures(out) -> dict:
    with open(out / "failures.csv") as f:
        return {r["image_id"]: r["cause"] for r in csv.DictReader(f)}


def test_per_host_limit_whatever_the_workers_and_user_agent(tmp_path):
    with FileServer(latency=0.1) as a, FileServer(latency=0.1) as b:
        urls = {f"p-{i}": (a if i % 2 else b).add(f"/p-{i}.jpg", jpeg(i), content_type="image/jpeg")
                for i in range(24)}
        index = index_of(urls, tmp_path)
        proc = run("--index", str(index), "--out", str(tmp_path / "out"), "-w", "16", "--per-host", "2",
                   "--timeout", "5")
        assert proc.returncode == 0, proc.stderr
        assert "Writing train/val for 24 successfully downloaded images." in proc.stdout
        # Sixteen workers, two hosts: each host got two requests at a time, never more.
        assert a.max_in_flight() == 2 and b.max_in_flight() == 2
        agents = {r.headers.get("User-Agent") for r in a.requests() + b.requests()}
    assert len(agents) == 1 and agents.pop().startswith("caffe-toolkit-wikiart/1.0 (course exercise downloader")


def test_retry_after_is_waited_counted_and_capped(tmp_path):
    with WikiArtHosts(tmp_path / "tls") as hosts:
        urls = {"rate-limited": hosts.painting("rate-limited", jpeg(1), "rate_limited"),
                "unavailable": hosts.painting("unavailable", jpeg(2), "unavailable", retry_in=2),
                "blocked-for-an-hour": hosts.painting("blocked-for-an-hour", jpeg(3), "over_cap"),
                "fine": hosts.painting("fine", jpeg(4))}
        out = tmp_path / "out"
        proc = run("--index", str(index_of(urls, tmp_path)), "--out", str(out), "-w", "4", "--retries", "2",
                   "--timeout", "5", "--max-retry-after", "5", env=hosts.env)
        assert proc.returncode == 0, proc.stderr
        assert failures(out) == {"blocked-for-an-hour": "http 429 (Retry-After 3600 s over the 5 s cap)"}
        assert len(hosts.requests("blocked-for-an-hour")) == 1  # failed at once, not waited for
        first, second = hosts.requests("rate-limited")
        assert second.time - first.time >= 0.95  # Retry-After: 1
        first, second = hosts.requests("unavailable")
        assert second.time - first.time >= 0.95  # an HTTP-date 1-2 s ahead (whole seconds)
    waited = re.search(r"Retries: 2 waited on Retry-After \(([\d.]+) s in all\); "
                       r"1 Retry-After over the 5 s cap", proc.stdout)
    assert waited, proc.stdout
    assert 1.9 <= float(waited.group(1)) <= 3.1
    assert (out / "images" / "unavailable.jpg").read_bytes() == jpeg(2)


def test_redirects_blocks_and_broken_replies(tmp_path):
    behaviours = ["ok", "moved", "chain", "flaky", "hotlink", "gone", "login_page", "short_body", "cut_jpeg",
                  "stall"]
    with WikiArtHosts(tmp_path / "tls") as hosts:
        urls = {name: hosts.painting(name, jpeg(i), name) for i, name in enumerate(behaviours)}
        out = tmp_path / "out"
        proc = run("--index", str(index_of(urls, tmp_path)), "--out", str(out), *FAST, env=hosts.env)
        assert proc.returncode == 0, proc.stderr
        assert failures(out) == {"hotlink": "http 403", "gone": "http 404", "login_page": "html page, not an image",
                                 "short_body": "connection dropped", "cut_jpeg": "truncated image",
                                 "stall": "timeout"}
        for i, name in enumerate(behaviours[:4]):
            assert (out / "images" / f"{name}.jpg").read_bytes() == jpeg(i)
        tries = {name: len(hosts.requests(name)) for name in behaviours}
        assert tries == {"ok": 1, "moved": 2, "chain": 4, "flaky": 2, "hotlink": 1, "gone": 1, "login_page": 1,
                         "short_body": 2, "cut_jpeg": 1, "stall": 2}  # 4xx are not retried; redirects are followed
        assert hosts.cdn.url("/").startswith("https://")  # "moved" went from http:// to https://
        assert hosts.cdn.requests() and all(r.headers["User-Agent"].startswith("caffe-toolkit-wikiart")
                                            for r in hosts.cdn.requests())  # kept across the redirect
    assert "Retries: 3 after a backoff" in proc.stdout  # flaky, short_body and stall, once each


# ---- --from-dir ---------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict:
    """Every file and folder under `folder`: bytes, mode and modification time."""
    listing = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        listing[str(path.relative_to(folder))] = (path.read_bytes() if path.is_file() else None, st.st_mode,
                                                  st.st_mtime_ns)
    return listing


def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg(i))).save(buf, "PNG")
    return buf.getvalue()


def test_from_dir_then_download_the_rest_and_no_download(server, tmp_path):
    rows = make_rows(server, 14)
    index = write_index(tmp_path / "index.csv.gz", rows)
    chosen = [row[0] for row in expected_subset(rows, 3, 10)]
    not_chosen = next(row[0] for row in rows if row[0] not in chosen)
    have = tmp_path / "collection"
    files = {chosen[0]: "Impressionism/{}.jpg", chosen[1]: "Baroque/more/deeper/{}.JPEG",
             chosen[2]: "Realism/{}.png", chosen[3]: "Symbolism/{}.jpg", chosen[4]: "Expressionism/{}.jpeg"}
    for n, (image_id, pattern) in enumerate(files.items()):
        path = have / pattern.format(image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = png(100 + n) if path.suffix == ".png" else jpeg(100 + n)
        path.write_bytes(data[:900] if image_id == chosen[3] else data)  # chosen[3]: damaged
    (have / "README.txt").write_text("WikiArt, by style\n")
    (have / "Impressionism" / f"{not_chosen}.jpg").write_bytes(jpeg(7))  # in the index, not in the subset
    (have / "Impressionism" / f"{chosen[5]}.txt").write_text("notes\n")  # the right name, not an image
    before = snapshot(have)

    out = tmp_path / "out"
    proc = run("-s", "3", "-i", "10", "--index", str(index), "--out", str(out), "--from-dir", str(have), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert f"Found 4 of 10 in {have}; 6 missing (1 of them damaged there, not used)" in proc.stdout
    assert f"not used: {have / 'Symbolism' / (chosen[3] + '.jpg')} (truncated image)" in proc.stdout
    assert "6 downloaded, 4 copied from" in proc.stdout
    downloaded = [chosen[3], *chosen[5:]]  # the damaged one and those not found
    assert sorted({r.path for r in server.requests()}) == sorted(f"/images/{i}.jpg" for i in downloaded)
    images = out / "images"
    for n in (0, 1, 4):
        assert (images / f"{chosen[n]}.jpg").read_bytes() == jpeg(100 + n)
    with Image.open(images / f"{chosen[2]}.jpg") as converted:
        assert converted.format == "JPEG" and converted.size == (48, 36)
    assert failures(out) == {}
    assert sorted(p.name for p in images.iterdir()) == sorted(f"{i}.jpg" for i in chosen)

    requested = len(server.requests())
    alone = tmp_path / "alone"
    proc = run("-s", "3", "-i", "10", "--index", str(index), "--out", str(alone), "--from-dir", str(have),
               "--no-download", "--link", "hard", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert len(server.requests()) == requested  # nothing downloaded
    assert os.path.samefile(alone / "images" / f"{chosen[0]}.jpg", have / files[chosen[0]].format(chosen[0]))
    assert not (alone / "images" / f"{chosen[2]}.jpg").is_symlink()
    with Image.open(alone / "images" / f"{chosen[2]}.jpg") as converted:
        assert converted.format == "JPEG"  # a PNG is converted, never linked
    assert failures(alone) == {chosen[3]: "damaged in --from-dir: truncated image",
                               **{i: "not in --from-dir" for i in chosen[5:]}}
    listed = (alone / "train.txt").read_text() + (alone / "val.txt").read_text()
    assert sorted(line.split()[0] for line in listed.splitlines()) == sorted(f"{chosen[n]}.jpg" for n in (0, 1, 2, 4))
    assert snapshot(have) == before  # the collection was only read


@pytest.mark.skipif(not REFERENCE_INDEX.exists(), reason="the course's wikiart.csv.gz is not on this machine")
def test_from_dir_finds_real_ids_in_style_folders(tmp_path):
    subset = select_subset(read_index(REFERENCE_INDEX), 761218, 2000)
    have = tmp_path / "wikiart"
    picked = subset[::100]
    for n, painting in enumerate(picked):
        path = have / STYLES[painting.label] / painting.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(n, size=(16, 12)))
    out = tmp_path / "out"
    proc = run("-s", "761218", "-i", "2000", "--index", str(REFERENCE_INDEX), "--out", str(out),
               "--from-dir", str(have), "--no-download")
    assert proc.returncode == 0, proc.stderr
    assert f"Found 20 of 2,000 in {have}; 1,980 missing" in proc.stdout
    for split, name in (("train", "train.txt"), ("test", "val.txt")):
        expected = [f"{p.filename} {p.label}" for p in picked if p.split == split]
        assert (out / name).read_text().splitlines() == expected
    assert Counter(failures(out).values()) == {"not in --from-dir": 1980}


# ---- the command line ------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["-i", "0"], "argument -i/--images: 0: give a positive number of images, or -1 for all"),
    (["-i", "-5"], "argument -i/--images: -5: give a positive number of images, or -1 for all"),
    (["-w", "0"], "argument -w/--workers: 0 workers would download nothing"),
    (["--per-host", "0"], "argument --per-host: 0: must be at least 1"),
    (["--max-retry-after", "-1"], "argument --max-retry-after: -1: must be 0 or more seconds"),
    (["--link", "hard"], "--link only applies with --from-dir"),
    (["--from-dir", "{tmp}/none"], "--from-dir {tmp}/none: no such folder"),
    (["--from-dir", "{tmp}", "--out", "{tmp}/out"], "its images/ folder is inside --from-dir {tmp}"),
])
def test_bad_arguments_are_refused(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        download_wikiart.parse_args([arg.format(tmp=tmp_path) for arg in args])
    assert exit_.value.code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_one_site_many_servers_shares_one_limit():
    assert host_of("https://uploads3.wikiart.org/images/a.jpg") == host_of("http://uploads8.WikiArt.org/b.jpg")
    assert host_of("http://127.0.0.1:8000/a.jpg") != host_of("http://127.0.0.1:8001/a.jpg")


def test_course_meanings_of_i_and_w_are_kept():
    args = download_wikiart.parse_args(["-i", "-1", "-w", "-1"])
    assert args.images == -1 and download_wikiart.workers_for(args.workers) == max(1, (os.cpu_count() or 1) - 1)
    assert download_wikiart.workers_for(-1000) == 1 and download_wikiart.workers_for(32) == 32
    assert args.per_host == 4 and args.max_retry_after == 60


def test_retry_after_forms():
    now = 1_445_412_450.0  # 30 s before Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now) == 30
    assert retry_after_seconds(formatdate(now - 60, usegmt=True), now) == 0  # in the past
    for unreadable in (None, "", "soon", "1.5", "\u00b2"):
        assert retry_after_seconds(unreadable, now) is None
