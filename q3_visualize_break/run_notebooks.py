"""Execute Q3's notebooks headless (what `make q3` runs); executed copies and figures go to --out.

    python -m q3_visualize_break.run_notebooks                       # all three, model "auto"
    python -m q3_visualize_break.run_notebooks --model demo --fast   # small iteration counts
    python -m q3_visualize_break.run_notebooks --only saliency-maps  # one of them
    python -m q3_visualize_break.run_notebooks --model demo --commit # also refresh the committed .ipynb
    python -m q3_visualize_break.run_notebooks --check               # exit 1 if a committed .ipynb is stale

The notebooks' source is the jupytext percent script next to each .ipynb (`saliency-maps.py` for
`saliency-maps.ipynb`): plain, linted Python with markdown in comments. It is what runs; the committed
.ipynb is its executed copy on the demo model (`--commit`), for reading on the repository's web pages,
and a test checks that its cells are the script's cells.

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

from q3_visualize_break.loading import WEIGHTS_ENV
from tools import paths
from tools.cli import exit_on
from tools.errors import ToolkitError
from tools.fileio import write_text

NOTEBOOK_DIR = Path(__file__).resolve().parent
NOTEBOOKS = ("class-model-visualizations.ipynb", "saliency-maps.ipynb", "breaking-convnets.ipynb")
SIZE_BUDGET = 1_500_000  # bytes: the most an executed notebook committed with its figures may take


def source(name: str) -> Path:
    """The jupytext percent script a notebook is made from."""
    return NOTEBOOK_DIR / Path(name).with_suffix(".py").name


def read_source(name: str):
    """The notebook `name` as its script defines it (no outputs), as an nbformat notebook."""
    import jupytext

    return jupytext.read(source(name))


def cells_of(nb) -> list:
    """(cell type, source, tags) of every cell: what must agree between the script and the .ipynb."""
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def stale_notebooks(folder=NOTEBOOK_DIR) -> list:
    """Committed notebooks missing, or whose cells differ from their script's."""
    import nbformat

    return [Path(folder) / n for n in NOTEBOOKS if not (Path(folder) / n).exists()
            or cells_of(nbformat.read(Path(folder) / n, as_version=4)) != cells_of(read_source(n))]


def write_unexecuted(folder=NOTEBOOK_DIR) -> list:
    """Each notebook from its script, without outputs (when there is no model to run them on)."""
    import nbformat

    return [write_text(Path(folder) / n, nbformat.writes(read_source(n)) + "\n") for n in NOTEBOOKS]


class NotebookError(ToolkitError, RuntimeError):
    """A notebook cell failed; the message names the notebook, the cell and the error."""


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def kernel_env(out: Path, model: str, fast: bool, gpu, weights=None, threads=None) -> dict:
    """The kernel's environment; `threads`: Caffe's OpenMP and BLAS threads (None: as this process has them)."""
    env = dict(os.environ)
    env.update(Q3_MODEL=str(model), Q3_FAST="1" if fast else "", Q3_OUT=str(out), GLOG_minloglevel="2")
    if threads:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
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

    nb = read_source(name)
    nb.metadata.setdefault("language_info", {"name": "python"})
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


def commit_executed(executed) -> list:
    """Copy executed notebooks over the committed ones, each checked against SIZE_BUDGET."""
    import shutil

    copied = []
    for path in executed:
        size = Path(path).stat().st_size
        if size > SIZE_BUDGET:
            raise ValueError(f"{path} is {size / 1e6:.1f} MB, over the {SIZE_BUDGET / 1e6:.1f} MB budget for a "
                             "committed notebook: make its figures smaller")
        copied.append(Path(shutil.copyfile(path, NOTEBOOK_DIR / Path(path).name)))
    return copied


def run_notebooks(out=None, model="auto", fast=False, gpu=None, only=None, timeout=3600, weights=None,
                  threads=None) -> list:
    """Execute the notebooks (all, or those named in `only`); returns the executed copies' paths.
    `weights`: a BVLC AlexNet .caffemodel the user has, for model bvlc_alexnet (and auto); `threads`: Caffe's
    OpenMP/BLAS threads in the kernels (default: as this process has them)."""
    out = Path(out) if out else paths.RESULTS / "q3"
    out = (out if out.is_absolute() else Path.cwd() / out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in NOTEBOOKS if not only or Path(n).stem in only or n in only]
    unknown = set(only or ()) - {Path(n).stem for n in NOTEBOOKS} - set(NOTEBOOKS)
    if unknown:
        raise ValueError(f"no notebook named {', '.join(sorted(unknown))}: choose from "
                         f"{', '.join(Path(n).stem for n in NOTEBOOKS)}")
    if gpu not in (None, ""):
        from tools.device import check_gpu

        check_gpu(gpu)  # a CPU-only build: say so (DeviceError, a ValueError) before a kernel starts
    if weights and not Path(weights).is_file():
        raise ValueError(f"--weights {weights}: no such file. Fix: give the path of your bvlc_alexnet.caffemodel")
    env = kernel_env(out, model, fast, gpu, weights, threads)
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
    ap.add_argument("--threads", type=int, help="Caffe's OpenMP/BLAS threads in the kernels (default: "
                                                "$OMP_NUM_THREADS, else every core)")
    ap.add_argument("--commit", action="store_true",
                    help=f"copy the executed notebooks over the committed q3_visualize_break/*.ipynb (each at most "
                         f"{SIZE_BUDGET / 1e6:.1f} MB)")
    ap.add_argument("--check", action="store_true",
                    help="run nothing: exit 1 when a committed .ipynb's cells differ from its .py script")
    ap.add_argument("--unexecuted", action="store_true",
                    help="run nothing: write the committed .ipynb from the scripts, without outputs")
    a = ap.parse_args(argv)
    if a.check or a.unexecuted:
        for path in write_unexecuted() if a.unexecuted else []:
            print(path)
        stale = stale_notebooks()
        for path in stale:
            print(f"stale: {path} (run `python -m q3_visualize_break.run_notebooks --model demo --commit`)",
                  file=sys.stderr)
        if stale:
            sys.exit(1)
        return
    with exit_on(ValueError):
        executed = run_notebooks(a.out, a.model, a.fast, a.gpu, a.only, a.timeout, a.weights, a.threads)
        if a.commit:
            for path in commit_executed(executed):
                print(f"[q3] committed copy: {path}")


if __name__ == "__main__":
    main()
