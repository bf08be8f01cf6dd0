"""Set-up on a warm cache: `make setup` (bash tools/setup/setup.sh) when everything is built, in seconds.

Against what a user would otherwise run to check an environment: `pip install -r requirements.txt
-c constraints.txt` with every requirement already satisfied, and the one import setup.sh itself
checks, `python -c "import caffe"`.
"""

import statistics
import subprocess
import sys
import time

from bench.common import child_main, table
from tools import paths


def seconds(cmd, runs) -> dict:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=paths.REPO, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return {"runs": out, "median": statistics.median(out)}


def run(quick, work):
    runs = 1 if quick else 3
    py = sys.executable
    commands = {
        "make setup (bash tools/setup/setup.sh), everything built": ["bash", "tools/setup/setup.sh"],
        "pip install -r requirements.txt -c constraints.txt, all satisfied":
            [py, "-m", "pip", "install", "-q", "-r", "requirements.txt", "-c", "constraints.txt"],
        "python -c 'import caffe'": [py, "-c", "import caffe"],
    }
    results = {name: seconds(cmd, runs) for name, cmd in commands.items()}
    setup = results[next(iter(commands))]["median"]
    rows = [[name, r["median"], r["median"] / setup] for name, r in results.items()]
    return {"title": "7. Set-up on a warm cache", "results": results, "tables": [table(
        f"Seconds (median of {runs})", ["command", "seconds", "/ make setup"], rows,
        "setup.sh checks the Debian packages (dpkg-query each), the .venv stamp, the cached Caffe build, and "
        "imports caffe once.")]}


def main(argv=None):
    child_main(run, argv)


if __name__ == "__main__":
    main()
