"""Execute Q3's notebooks headless (what `make q3` runs); executed copies and figures go to --out.

    python -m q3_visualize_break.run_notebooks                       # all three, model "auto"
    python -m q3_visualize_break.run_notebooks --model demo --fast   # small iteration counts
    python -m q3_visualize_break.run_notebooks --only saliency-maps  # one of them

The kernel is this interpreter (jupyter_client turns the "python3" kernelspec's `python` into
sys.executable), started in the repo root with Q3_MODEL, Q3_FAST, Q3_OUT and GPU set for the
notebooks' parameter cells. A failing cell stops the run: the message names the notebook, the cell
and the error, the partly executed copy is saved, and the exit status is 1.
"""

import argparse
import os
import sys
import time
from pathlib import Path

from q3_visualize_break.models import WEIGHTS_ENV
from tools import paths
from tools.fileio import write_text

NOTEBOOK_DIR = Path(__file__).resolve().parent
NOTEBOOKS = ("class-model-visualizations.ipynb", "saliency-maps.ipynb", "breaking-convnets.ipynb")


class NotebookError(RuntimeError):
    """A notebook cell failed; the message names the notebook, the cell and the error."""


def kernel_env(out: Path, model: str, fast: bool, gpu, weights=None) -> dict:
    env = dict(os.environ)
    env.update(Q3_MODEL=str(model), Q3_FAST="1" if fast else "", Q3_OUT=str(out), GLOG_minloglevel="2")
    if gpu is not None:
        env["GPU"] = str(gpu)
    if weights:
        env[WEIGHTS_ENV] = str(Path(weights).resolve())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(paths.REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("MPLBACKEND", None)  # the kernel's inline backend puts figures into the executed notebook
    return env


def run_notebook(name: str, out: Path, env: dict, timeout=3600) -> Path:
    """Execute one notebook; the executed copy is written to `out`/`name` (also when a cell fails)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    failed = {}

    def on_cell_error(cell, cell_index, execute_reply):
        failed.update(index=cell_index, source=cell.source, reply=execute_reply["content"])

    # The kernel's own log would only warn that a kernel on localhost talks over plain TCP (as nbclient's
    # always do); errors in cells still come back as messages.
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", on_cell_error=on_cell_error,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(paths.REPO)}})
    executed = out / name
    try:
        client.execute(env=env)
    except CellExecutionError:
        write_text(executed, nbformat.writes(nb))
        reply = failed.get("reply", {})
        first_line = failed.get("source", "").strip().splitlines()[:1]
        raise NotebookError(f"{name}: cell {failed.get('index', '?')} ({first_line[0][:60] if first_line else ''!r}) "
                            f"failed: {reply.get('ename', 'error')}: {reply.get('evalue', '')}; the partly executed "
                            f"notebook is {executed}") from None
    write_text(executed, nbformat.writes(nb))
    return executed


def run_notebooks(out=None, model="auto", fast=False, gpu=None, only=None, timeout=3600, weights=None) -> list:
    """Execute the notebooks (all, or those named in `only`); returns the executed copies' paths.
    `weights`: a BVLC AlexNet .caffemodel the user has, for model bvlc_alexnet (and auto)."""
    out = Path(out) if out else paths.RESULTS / "q3"
    out = (out if out.is_absolute() else Path.cwd() / out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in NOTEBOOKS if not only or Path(n).stem in only or n in only]
    unknown = set(only or ()) - {Path(n).stem for n in NOTEBOOKS} - set(NOTEBOOKS)
    if unknown:
        raise ValueError(f"no notebook named {', '.join(sorted(unknown))}: choose from "
                         f"{', '.join(Path(n).stem for n in NOTEBOOKS)}")
    if gpu not in (None, ""):
        from tools.caffe_runner import CaffeError, gpu_args

        try:
            gpu_args(gpu)  # a CPU-only build: say so before a kernel starts
        except CaffeError as e:
            raise ValueError(str(e)) from None
    if weights and not Path(weights).is_file():
        raise ValueError(f"--weights {weights}: no such file. Fix: give the path of your bvlc_alexnet.caffemodel")
    env = kernel_env(out, model, fast, gpu, weights)
    executed = []
    for name in names:
        start = time.time()
        executed.append(run_notebook(name, out, env, timeout))
        print(f"[q3] {name}: ok in {time.time() - start:.0f}s -> {executed[-1]}", flush=True)
    return executed


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m q3_visualize_break.run_notebooks",
                                 description="Execute Q3's notebooks headless; executed copies and figures go to "
                                             "--out. Exit status 1 names the notebook and cell that failed.")
    ap.add_argument("--out", default=None, help="output folder (default results/q3)")
    ap.add_argument("--model", default=os.environ.get("Q3_MODEL", "auto"),
                    help="auto, bvlc_alexnet, demo or a model.json path (default: $Q3_MODEL or auto)")
    ap.add_argument("--fast", action="store_true", default=os.environ.get("Q3_FAST") == "1",
                    help="small iteration counts, for a quick check (also Q3_FAST=1)")
    ap.add_argument("--gpu", default=None, help="CUDA device id (default: $GPU, empty for the CPU)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks, e.g. saliency-maps")
    ap.add_argument("--weights", metavar="PATH", default=os.environ.get(WEIGHTS_ENV),
                    help=f"a BVLC AlexNet .caffemodel you have, for --model bvlc_alexnet/auto (default: "
                         f"${WEIGHTS_ENV}, "
                         "else models/bvlc_alexnet/bvlc_alexnet.caffemodel)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds a single cell may run (default 3600)")
    a = ap.parse_args(argv)
    try:
        run_notebooks(a.out, a.model, a.fast, a.gpu, a.only, a.timeout, a.weights)
    except (NotebookError, ValueError) as e:
        print(f"[q3] FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
