"""tools/download.py and its CLIs against a local HTTP server that drops, stalls and fails on purpose."""

import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
from conftest import REPO
from http_fixtures import Body, Drop, FileServer, Stall, Status

from tools import download as download_module
from tools.download import DownloadError, download, http_session, partial_path

FAST = dict(timeout=(2, 1), retries=2, progress=False)
SIZE = 1_000_000


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


@pytest.fixture(scope="module")
def payload():
    return np.random.RandomState(0).bytes(SIZE)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def test_plain_download_checks_both_checksums(server, payload, tmp_path):
    url = server.add("/f.bin", payload)
    out = download(url, tmp_path / "f.bin", md5=hashlib.md5(payload).hexdigest(), sha1=sha1(payload).upper(), **FAST)
    assert out.read_bytes() == payload
    assert not partial_path(out).exists()
    assert "Range" not in server.requests()[0].headers


def test_dropped_connection_resumes_from_the_partial_file(server, payload, tmp_path):
    url = server.add("/f.bin", payload, faults=[Drop(after=300_000)])
    out = download(url, tmp_path / "f.bin", sha1=sha1(payload), **FAST)
    first, second = server.requests("/f.bin")
    assert "Range" not in first.headers
    start = int(second.headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 300_000
    assert out.read_bytes() == payload


def test_partial_file_of_an_earlier_call_is_resumed(server, payload, tmp_path):
    # Drops that bring new bytes reset the retry count; ones that bring none use it up.
    url = server.add("/f.bin", payload, faults=[Drop(after=400_000)] + [Drop(after=0)] * 3)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="connection dropped.*kept in .*f.bin.part"):
        download(url, dest, sha1=sha1(payload), **FAST)
    kept = partial_path(dest).stat().st_size
    assert kept > 0 and not dest.exists()
    download(url, dest, sha1=sha1(payload), **FAST)
    assert server.requests("/f.bin")[-1].headers["Range"] == f"bytes={kept}-"
    assert dest.read_bytes() == payload


def test_server_ignoring_range_starts_over(server, payload, tmp_path):
    url = server.add("/f.bin", payload, faults=[Drop(after=300_000)], ignore_range=True)
    out = download(url, tmp_path / "f.bin", sha1=sha1(payload), **FAST)
    assert "Range" in server.requests("/f.bin")[1].headers
    assert out.read_bytes() == payload


def test_server_error_is_retried(server, payload, tmp_path):
    url = server.add("/f.bin", payload, faults=[Status(500), Status(503)])
    out = download(url, tmp_path / "f.bin", sha1=sha1(payload), session=http_session(retries=2, backoff=0.05),
                   **FAST)
    assert out.read_bytes() == payload
    assert len(server.requests("/f.bin")) == 3


def test_retry_after_is_honoured_but_capped(server, payload, tmp_path, monkeypatch):
    """A 503 asking for an hour's wait is retried after MAX_RETRY_AFTER, not an hour."""
    monkeypatch.setattr(download_module, "MAX_RETRY_AFTER", 0.3)
    url = server.add("/f.bin", payload, faults=[Status(503, headers={"Retry-After": "3600"}),
                                                Status(429, headers={"Retry-After": "3600"})])
    start = time.monotonic()
    assert download(url, tmp_path / "f.bin", sha1=sha1(payload), **FAST).read_bytes() == payload
    assert 0.5 <= time.monotonic() - start < 5 and len(server.requests("/f.bin")) == 3


def test_server_error_that_persists(server, payload, tmp_path):
    url = server.add("/f.bin", payload, faults=[Status(500)] * 5)
    with pytest.raises(DownloadError, match=r"HTTP 500 for .*/f.bin.*try again later"):
        download(url, tmp_path / "f.bin", session=http_session(retries=1, backoff=0.01), **FAST)
    assert not list(tmp_path.iterdir())


def test_not_found_leaves_nothing_behind(server, tmp_path):
    dest = tmp_path / "missing.bin"
    partial_path(dest).write_bytes(b"stale partial")
    with pytest.raises(DownloadError, match=r"HTTP 404 for http://127.0.0.1:\d+/missing.bin.*set X_URL to a mirror"):
        download(server.url("/missing.bin"), dest, url_env="X_URL", **FAST)
    assert not list(tmp_path.iterdir())


def test_checksum_mismatch_keeps_the_download_aside(server, payload, tmp_path):
    url = server.add("/f.bin", payload)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=f"expected sha1 {'0' * 40}, got {sha1(payload)}.*kept as .*f.bin.mismatch"):
        download(url, dest, sha1="0" * 40, **FAST)
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin.mismatch"]
    assert (tmp_path / "f.bin.mismatch").read_bytes() == payload


def test_repeated_mismatches_of_the_same_bytes_keep_one_copy(server, payload, tmp_path):
    url = server.add("/f.bin", payload)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"kept as .*f\.bin\.mismatch\)"):
        download(url, dest, sha1="0" * 40, **FAST)
    for _ in range(2):  # the same wrong file again: one copy is enough, and the message says where it is
        with pytest.raises(DownloadError, match=rf"the same file as {tmp_path / 'f.bin.mismatch'}, kept from an "
                                                r"earlier try\)\. Fix: run again"):
            download(url, dest, sha1="0" * 40, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin.mismatch"]
    # other wrong bytes (same size) are another file: kept beside the first
    other = bytes(b ^ 1 for b in payload)
    url = server.add("/f.bin", other)
    with pytest.raises(DownloadError, match=r"kept as .*f\.bin\.mismatch\.2\)"):
        download(url, dest, sha1="0" * 40, **FAST)
    assert (tmp_path / "f.bin.mismatch").read_bytes() == payload
    assert (tmp_path / "f.bin.mismatch.2").read_bytes() == other
    with pytest.raises(DownloadError, match=r"the same file as .*f\.bin\.mismatch\.2, kept"):
        download(url, dest, sha1="0" * 40, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin.mismatch", "f.bin.mismatch.2"]


def test_wrong_content_is_rejected_by_its_checksum(server, payload, tmp_path):
    url = server.add("/f.bin", payload, faults=[Body(b"<html>login</html>")])
    with pytest.raises(DownloadError, match="checksum mismatch.*use a copy you trust with make q2 WEIGHTS=path"):
        download(url, tmp_path / "f.bin", sha1=sha1(payload), own_file_hint="make q2 WEIGHTS=path", **FAST)
    assert not (tmp_path / "f.bin").exists() and (tmp_path / "f.bin.mismatch").read_bytes() == b"<html>login</html>"


def test_stalled_server_times_out(server, payload, tmp_path):
    url = server.add("/f.bin", payload, faults=[Stall(30)] * 5)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="no reply within 0.3 s"):
        download(url, tmp_path / "f.bin", timeout=(2, 0.3), retries=1, progress=False)
    assert time.monotonic() - start < 5


def test_stall_mid_file_times_out_and_keeps_the_partial(server, payload, tmp_path):
    url = server.add("/f.bin", payload, faults=[Stall(30, after=200_000)] + [Stall(30, after=0)] * 5)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="no data within the read timeout"):
        download(url, tmp_path / "f.bin", timeout=(2, 0.3), retries=1, progress=False)
    assert time.monotonic() - start < 5
    assert partial_path(tmp_path / "f.bin").exists()


def test_existing_valid_file_makes_no_request(server, payload, tmp_path):
    url = server.add("/f.bin", payload)
    dest = tmp_path / "f.bin"
    dest.write_bytes(payload)
    assert download(url, dest, sha1=sha1(payload), **FAST) == dest
    assert server.requests() == []


def test_existing_file_that_fails_its_checksum_is_moved_aside_never_deleted(server, payload, tmp_path, capsys):
    url = server.add("/f.bin", payload)
    dest = tmp_path / "f.bin"
    for n, content in enumerate((b"the user's own copy", b"another copy"), 1):
        dest.write_bytes(content)
        download(url, dest, sha1=sha1(payload), own_file_hint="--weights PATH", **FAST)
        assert dest.read_bytes() == payload and len(server.requests()) == n
        dest.unlink()
    assert (tmp_path / "f.bin.mismatch").read_bytes() == b"the user's own copy"
    assert (tmp_path / "f.bin.mismatch.2").read_bytes() == b"another copy"
    note = capsys.readouterr().err
    assert f"moved it to {tmp_path / 'f.bin.mismatch'}" in note and "use it with --weights PATH" in note


def test_complete_partial_file_is_finished_without_a_body(server, payload, tmp_path):
    url = server.add("/f.bin", payload)
    dest = tmp_path / "f.bin"
    partial_path(dest).write_bytes(payload)
    download(url, dest, sha1=sha1(payload), **FAST)  # the server answers 416 with the total size
    assert dest.read_bytes() == payload


def test_unreachable_host_names_the_mirror_variable(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"cannot reach 127.0.0.1 \(connection refused\).*offline.*MY_URL"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", url_env="MY_URL", timeout=(1, 1), retries=0,
                 progress=False)


def test_unknown_host_fails_at_once_without_retries(tmp_path):
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"cannot reach no-such-host.invalid \(name not resolved\)"):
        download("http://no-such-host.invalid/x", tmp_path / "x", retries=5, progress=False)
    assert time.monotonic() - start < 10  # five retries with backoff would take 15 s
    assert not list(tmp_path.iterdir())


# --- the CLIs, end to end ---------------------------------------------------------------------------------------

def run_cli(module, *args, env=None):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("module", ["tools.download_model", "tools.get_ilsvrc_aux"])
def test_cli_help(module):
    proc = run_cli(module, "--help")
    assert proc.returncode == 0 and "--url" in proc.stdout


def test_download_model_cli(server, payload, tmp_path):
    server.add("/alexnet.caffemodel", payload, faults=[Drop(after=200_000)])
    proc = run_cli("tools.download_model", "bvlc_alexnet", "--out", str(tmp_path), "--sha1", sha1(payload),
                   env={"BVLC_ALEXNET_URL": server.url("/alexnet.caffemodel")})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "bvlc_alexnet.caffemodel").read_bytes() == payload
    assert proc.stdout.strip() == str(tmp_path / "bvlc_alexnet.caffemodel")


def test_download_model_cli_errors_without_traceback(server, tmp_path):
    server.add("/alexnet.caffemodel", b"not the weights")
    proc = run_cli("tools.download_model", "bvlc_alexnet", "--out", str(tmp_path), "--url",
                   server.url("/alexnet.caffemodel"))
    assert proc.returncode == 1
    assert "expected sha1 9116a64c0fbe4459d18f4bb6b56d647b63920377" in proc.stderr
    assert "make q2 WEIGHTS=path" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["bvlc_alexnet.caffemodel.mismatch"]
    proc = run_cli("tools.download_model", "no_such_model", "--out", str(tmp_path))
    assert proc.returncode == 1 and "unknown model 'no_such_model'" in proc.stderr and "Traceback" not in proc.stderr


def aux_archive(mean: np.ndarray, extra_member=None) -> bytes:
    from caffe.proto import caffe_pb2

    blob = caffe_pb2.BlobProto()
    blob.num, (blob.channels, blob.height, blob.width) = 1, mean.shape
    blob.data.extend(mean.ravel().tolist())
    files = {"imagenet_mean.binaryproto": blob.SerializeToString(), "synset_words.txt": b"n01440764 tench\n",
             "synsets.txt": b"n01440764\n", "imagenet.bet.pickle": b"not kept"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [*files.items(), *([extra_member] if extra_member else [])]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_get_ilsvrc_aux_cli(server, tmp_path):
    mean = np.random.RandomState(1).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    archive = aux_archive(mean)
    server.add("/caffe_ilsvrc12.tar.gz", archive)
    proc = run_cli("tools.get_ilsvrc_aux", "--out", str(tmp_path), "--md5", hashlib.md5(archive).hexdigest(),
                   env={"ILSVRC_AUX_URL": server.url("/caffe_ilsvrc12.tar.gz")})
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caffe_ilsvrc12.tar.gz", "imagenet_mean.binaryproto",
                                                           "imagenet_mean.npy", "synset_words.txt", "synsets.txt"]
    saved = np.load(tmp_path / "imagenet_mean.npy")
    assert saved.dtype == np.float32 and saved.shape == (3, 256, 256)
    np.testing.assert_array_equal(saved, mean)
    assert (tmp_path / "synset_words.txt").read_text() == "n01440764 tench\n"
    again = run_cli("tools.get_ilsvrc_aux", "--out", str(tmp_path), "--url", server.url("/caffe_ilsvrc12.tar.gz"))
    assert again.returncode == 0 and "already there" in again.stdout
    assert len(server.requests()) == 1


def test_get_ilsvrc_aux_rejects_path_traversal(server, tmp_path):
    archive = aux_archive(np.zeros((3, 4, 4), np.float32), extra_member=("../evil.txt", b"x"))
    server.add("/aux.tar.gz", archive)
    out = tmp_path / "aux"
    proc = run_cli("tools.get_ilsvrc_aux", "--out", str(out), "--url", server.url("/aux.tar.gz"))
    assert proc.returncode == 1 and "unsafe path '../evil.txt'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "evil.txt").exists()


def test_ctrl_c_during_a_download_ends_in_one_line_with_status_130_and_keeps_the_part(server, tmp_path):
    from http_fixtures import Stall

    weights = bytes(range(256)) * 4096  # 1 MB
    server.add("/alexnet.caffemodel", weights, faults=[Stall(seconds=30, after=300_000)])
    # SIGINT at its default in the child, as in a terminal's foreground job: a test run started in the background
    # (`cmd &`, e.g. CI under nohup) inherits it ignored, and Python then never turns it into KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "tools.download_model", "bvlc_alexnet", "--out", str(tmp_path),
                             "--url", server.url("/alexnet.caffemodel")], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 30  # the downloader writes whole 64 kB chunks: 4 of them before the stall
    while not any(p.stat().st_size >= 4 << 16 for p in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted"), err
    kept = [p.name for p in tmp_path.iterdir() if p.stat().st_size >= 4 << 16]
    assert kept == ["bvlc_alexnet.caffemodel.part"], "the part already fetched is kept for the next run to resume"
