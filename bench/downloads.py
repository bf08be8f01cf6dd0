"""Downloads: images per second of download_wikiart.py against a loopback server with 50 ms per request.

The downloader's own entry point (download_wikiart.main, in this process: no interpreter start-up
in the figure) fetches N images listed in an index in the course's format (wikiart.csv.gz columns)
from bench/latency_server.py (the tests' file server plus a fixed delay, in a process of its own), at
1, 4, 16 and 64 workers, into a fresh folder each time. Two series: small JPEGs stored as downloaded
(the network-bound case), and 500-800 px JPEGs with `--resize 256x256`, as `make q2` stores them
(each image is then also decoded, resized and re-encoded on these 2 cores).
"""

import contextlib
import csv
import gzip
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import images
from bench.common import child_main, table
from tools import paths

WORKERS = (1, 4, 16, 64)
DELAY = 0.05


@contextlib.contextmanager
def serving(folder, delay):
    proc = subprocess.Popen([sys.executable, "-m", "bench.latency_server", str(folder), "--delay", str(delay)],
                            cwd=paths.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield json.loads(proc.stdout.readline())["url"]
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def write_index(path, base_url, files) -> Path:
    """The course's index format: image_id,page_url,image_url,label,_split (every fifth row a test row)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["image_id", "page_url", "image_url", "label", "_split"])
    for i, f in enumerate(files):
        stem = Path(f).stem
        w.writerow([f"img{stem}", f"{base_url}/page/{stem}", f"{base_url}/{Path(f).name}", i % 10,
                    "test" if i % 5 == 4 else "train"])
    path.write_bytes(gzip.compress(out.getvalue().encode()))
    return path


def download(index, out, n, workers, extra) -> float:
    from q2_wikiart_finetune import download_wikiart

    t0 = time.perf_counter()
    # one loopback host stands for WikiArt's many: lift the per-host politeness limit to the worker count
    try:
        rc = download_wikiart.main(["-s", "0", "-i", str(n), "-w", str(workers), "--per-host", str(workers),
                                    "--index", str(index), "--out", str(out), "--timeout", "30", *extra])
    except SystemExit as e:  # a failure ends the downloader through tools.cli.exit_on, its line already printed
        rc = e.code
    seconds = time.perf_counter() - t0
    got = len(list((out / "images").glob("*.jpg")))
    if rc != 0 or got != n:
        raise RuntimeError(f"download_wikiart exited {rc} with {got} of {n} images in {out}")
    return seconds


def run(quick, work):
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"  # loopback only, never a proxy
    n = 64 if quick else 256
    series = [("small JPEGs, stored as downloaded", images.full_size(work / "small", n, low=200, high=320), []),
              ("500-800 px JPEGs, --resize 256x256", images.full_size(work / "big", n, seed=1),
               ["--resize", "256x256"])]
    results, rows = {}, []
    for s, (name, files, extra) in enumerate(series):
        kb = sum(f.stat().st_size for f in files) / len(files) / 1024
        with serving(files[0].parent, DELAY) as url:
            index = write_index(work / f"index{s}.csv.gz", url, files)
            times = {w: download(index, work / f"out{s}_w{w}", n, w, extra) for w in WORKERS}
        results[name] = {"images": n, "mean_kb": kb, "seconds": times}
        for w, t in times.items():
            ideal = n / -(-n // w)  # n rounds of one request against ceil(n / w) rounds of w
            rows.append([name, w, n, t, n / t, times[1] / t, ideal])
    return {"title": "6. Downloads (download_wikiart.py, loopback server, 50 ms per request)", "delay_s": DELAY,
            "results": results, "tables": [table(
                "Images per second against workers (speed-up: against 1 worker)",
                ["series", "workers", "images", "seconds", "images / s", "speed-up", "ideal speed-up"], rows,
                f"One worker waits 50 ms per image, at most {1 / DELAY:.0f} images/s. Ideal speed-up: the workers "
                "that the latency lets run at once, with no CPU cost per image.")]}


def main(argv=None):
    child_main(run, argv)


if __name__ == "__main__":
    main()
