"""Fetch Caffe's ILSVRC12 auxiliary files (data/ilsvrc12/get_ilsvrc_aux.sh): the ImageNet mean and labels.

    python -m tools.get_ilsvrc_aux   # -> data/ilsvrc12/: imagenet_mean.binaryproto, imagenet_mean.npy, synset_words.txt

The archive's .txt files and its mean (a BlobProto of legacy dims 1x3x256x256, BGR) are kept, the
mean also as a (3, 256, 256) .npy for pycaffe. Unlike the shell script, the archive is kept beside them
(17 MB), so nothing a user placed there is ever deleted and a rerun needs no network. `--url` or
ILSVRC_AUX_URL points at a mirror; `--archive PATH` unpacks a copy you already have. The archive's
checksum is not published, so it is only checked when given (`--md5`); its contents are always checked.
"""

import argparse
import gzip
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from tools import paths
from tools.cli import exit_on
from tools.download import DownloadError, download
from tools.fileio import atomic_path, move_aside, write_bytes

ARCHIVE_URL = "http://dl.caffe.berkeleyvision.org/caffe_ilsvrc12.tar.gz"
URL_ENV = "ILSVRC_AUX_URL"
KEEP_SUFFIXES = (".txt", ".binaryproto")
MEAN = "imagenet_mean.binaryproto"
REQUIRED = (MEAN, "synset_words.txt")


def unpack(archive, out_dir) -> list[Path]:
    """Write the archive's .txt and .binaryproto files into `out_dir`, flat and each atomically.

    Only regular files are read, and only their contents: links, devices and folders in the archive
    are skipped, and a member named with '..' or an absolute path rejects the whole archive.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    written = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts:
                    raise DownloadError(f"{archive}: unsafe path '{member.name}' in the archive; nothing more "
                                        "unpacked. Fix: check where the archive came from (--url)")
                if member.isfile() and name.name.endswith(KEEP_SUFFIXES):
                    written.append(write_bytes(out_dir / name.name, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DownloadError(f"{archive} is not a readable tar.gz archive ({e}). Fix: delete it and run again, "
                            f"or check the URL (--url / {URL_ENV})") from None
    return written


def save_mean_npy(binaryproto, npy) -> np.ndarray:
    """The mean BlobProto as a (C, H, W) float32 .npy, the form pycaffe's Transformer.set_mean takes."""
    from tools.lmdb_io import read_binaryproto

    mean = read_binaryproto(binaryproto).astype(np.float32)
    if mean.ndim != 3:
        raise DownloadError(f"{binaryproto}: expected a (C, H, W) mean, got shape {mean.shape}")
    with atomic_path(npy, suffix=".npy") as tmp:
        np.save(tmp, mean)
    return mean


def get_ilsvrc_aux(out_dir=None, *, url=None, md5=None, archive=None, progress=None) -> Path:
    """Download (or take `archive`) and unpack the auxiliary files into `out_dir` (default data/ilsvrc12)."""
    out_dir = Path(out_dir) if out_dir else paths.DATA / "ilsvrc12"
    if archive is None:
        url = url or os.environ.get(URL_ENV) or ARCHIVE_URL
        archive = download(url, out_dir / "caffe_ilsvrc12.tar.gz", md5=md5, desc="caffe_ilsvrc12", progress=progress,
                           url_env=URL_ENV, own_file_hint="--archive PATH")
        downloaded = True
    else:
        archive, downloaded = Path(archive), False
        if not archive.is_file():
            raise DownloadError(f"--archive {archive}: no such file. Fix: give the path of caffe_ilsvrc12.tar.gz, "
                                "or leave --archive out to download it")
    unpack(archive, out_dir)
    missing = [name for name in REQUIRED if not (out_dir / name).exists()]
    if missing:
        where = archive
        if downloaded:  # our download, but perhaps an error page: keep it for a look, out of the way
            where = move_aside(archive, "mismatch")
        raise DownloadError(f"{archive}: the archive has no {', '.join(missing)} (kept as {where}). Fix: check "
                            f"where it came from (--url / {URL_ENV}, or --archive)")
    save_mean_npy(out_dir / MEAN, out_dir / "imagenet_mean.npy")
    return out_dir


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.get_ilsvrc_aux",
        description="Download Caffe's ILSVRC12 auxiliary archive and keep its mean (imagenet_mean.binaryproto, "
                    "also saved as imagenet_mean.npy) and label files (synset_words.txt, synsets.txt, ...).",
        epilog=f"Environment: {URL_ENV} points at a mirror of {ARCHIVE_URL}.")
    ap.add_argument("--url", help=f"archive URL (default: ${URL_ENV}, else {ARCHIVE_URL})")
    ap.add_argument("--md5", help="expected MD5 of the archive (default: not checked; none is published)")
    ap.add_argument("--out", help="folder to fill (default: data/ilsvrc12/)")
    ap.add_argument("--archive", metavar="PATH", help="unpack this caffe_ilsvrc12.tar.gz instead of downloading")
    a = ap.parse_args(argv)
    out_dir = Path(a.out) if a.out else paths.DATA / "ilsvrc12"
    wanted = [out_dir / name for name in (*REQUIRED, "imagenet_mean.npy")]
    if all(p.exists() for p in wanted) and not a.archive:
        print(f"{out_dir}: already there (delete {wanted[0].name} to fetch again)")
        return
    with exit_on():
        get_ilsvrc_aux(out_dir, url=a.url, md5=a.md5, archive=a.archive)
    print("\n".join(str(p) for p in sorted(out_dir.iterdir()) if not p.name.startswith(".")))


if __name__ == "__main__":
    main()
