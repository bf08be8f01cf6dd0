"""Download pretrained weights from the BVLC model zoo, checked by SHA-1 (Caffe's download_model_binary.py).

    python -m tools.download_model bvlc_alexnet     # -> models/bvlc_alexnet/bvlc_alexnet.caffemodel
    BVLC_ALEXNET_URL=http://mirror/bvlc_alexnet.caffemodel python -m tools.download_model bvlc_alexnet

`<MODEL>_URL` (the name upper-cased) or `--url` points at a mirror; the SHA-1 still has to match.
"""

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tools import paths
from tools.cli import exit_on
from tools.download import DownloadError, download


@dataclass(frozen=True)
class ZooModel:
    url: str
    sha1: str


# The URLs and SHA-1s of the models' readme.md in BVLC Caffe's models/ folder.
KNOWN_MODELS = {
    "bvlc_alexnet": ZooModel("http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
                             "9116a64c0fbe4459d18f4bb6b56d647b63920377"),
    "bvlc_reference_caffenet": ZooModel("http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel",
                                        "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"),
}


def url_env(name: str) -> str:
    """The environment variable that overrides a model's URL: bvlc_alexnet -> BVLC_ALEXNET_URL."""
    return f"{name.upper()}_URL"


def download_model(name: str, out_dir=None, *, url=None, sha1=None, progress=None) -> Path:
    """Fetch `<out_dir>/<name>.caffemodel` (default models/<name>/); `url`/`sha1` override the table."""
    known = KNOWN_MODELS.get(name)
    url = url or os.environ.get(url_env(name)) or (known.url if known else None)
    sha1 = sha1 or (known.sha1 if known else None)
    if url is None:
        raise DownloadError(f"unknown model '{name}' (known: {', '.join(sorted(KNOWN_MODELS))}). "
                            f"Fix: pick a known one, or give its URL with --url (and --sha1)")
    out_dir = Path(out_dir) if out_dir else paths.MODELS / name
    return download(url, out_dir / f"{name}.caffemodel", sha1=sha1, desc=name, progress=progress,
                    url_env=url_env(name), own_file_hint="make q2 WEIGHTS=path (--weights PATH)")


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.download_model",
        description="Download a pretrained .caffemodel of the BVLC model zoo and check its SHA-1. "
                    "A partial download resumes; a file already there and valid is not fetched again.",
        epilog=f"Known models: {', '.join(sorted(KNOWN_MODELS))}. Environment: <MODEL>_URL (e.g. "
               "BVLC_ALEXNET_URL) points at a mirror.")
    ap.add_argument("model", help="model name, e.g. bvlc_alexnet (a path like models/bvlc_alexnet works too)")
    ap.add_argument("--url", help="download from this URL instead (default: $<MODEL>_URL, else the zoo's)")
    ap.add_argument("--sha1", help="expected SHA-1 (default: the zoo's; needed for a model not in the table)")
    ap.add_argument("--out", help="folder for <model>.caffemodel (default: models/<model>/)")
    a = ap.parse_args(argv)
    name = Path(a.model).name  # Caffe's script takes the model's folder
    with exit_on():
        path = download_model(name, a.out, url=a.url, sha1=a.sha1)
    if not (a.sha1 or name in KNOWN_MODELS):
        print(f"note: no SHA-1 known for {name}: the file was not checked", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
