"""Q2 time to accuracy: cached features vs feature extractor vs full fine-tune (and scratch) at equal iterations.

The offline demo (q2_wikiart_finetune.offline, run by `make demo`) trains every mode and writes the
numbers: wall times to results/demo/q2/{transfer,scratch}/timings.json, accuracies to
results/demo/q2/transfer_summary.md. When they exist they are read (the table says so, with their
date); otherwise offline.run trains everything here, in a scratch repository, at reduced sizes.
"""

import dataclasses
import datetime
import json
import re
from pathlib import Path

from bench.common import child_main, table
from tools import paths

RESULTS = "results/demo/q2"
ORDER = ("cached_features", "feature_extractor", "finetune", "scratch")


def read_demo(repo) -> dict | None:
    """{mode: {seconds, accuracy, iterations}} from a finished demo run under repo, or None."""
    q2 = Path(repo) / RESULTS
    files = [q2 / "transfer" / "timings.json", q2 / "scratch" / "timings.json", q2 / "transfer_summary.md"]
    if not all(f.exists() for f in files):
        return None
    seconds = json.loads(files[0].read_text())
    scratch = json.loads(files[1].read_text())
    if "finetune" in scratch:
        seconds["scratch"] = scratch["finetune"]
    summary = files[2].read_text()
    accuracy = {m.group(1): float(m.group(2)) for m in
                re.finditer(r"^\| (\w+) \| [^|]+ \| ([\d.]+) \| [\d.]+ \|$", summary, re.MULTILINE)}
    iterations = re.search(r"every mode (\d+) iterations", summary)
    if not all(m in seconds and m in accuracy for m in ORDER):
        return None
    stamp = max(f.stat().st_mtime for f in files)
    return {"modes": {m: {"seconds": seconds[m], "accuracy": accuracy[m]} for m in ORDER},
            "iterations": int(iterations.group(1)) if iterations else None,
            "source": f"the `make demo` run of {datetime.datetime.fromtimestamp(stamp, datetime.UTC):%Y-%m-%d %H:%M} "
                      f"UTC ({RESULTS}/transfer/timings.json, {RESULTS}/transfer_summary.md)"}


def run_offline(work, quick) -> dict:
    """offline.run in a scratch repository at reduced sizes; read back like a demo run."""
    from q2_wikiart_finetune import offline

    sizes = offline.Sizes(pretrain_per_class=60 if quick else 200, pretrain_val_per_class=20, target_per_class=20,
                          target_val_per_class=20 if quick else 50, heldout_per_class=10,
                          pretrain_iter=40 if quick else 300, transfer_iter=20 if quick else 100)
    offline.run(sizes=sizes, repo=work, progress=False)
    result = read_demo(work)
    if result is None:
        raise RuntimeError(f"offline.run in {work} left no timings/summary to read")
    result["source"] = f"run here by offline.run at reduced sizes {dataclasses.asdict(sizes)} (no demo results found)"
    return result


def run(quick, work):
    result = read_demo(paths.REPO) or run_offline(work, quick)
    modes = result["modes"]
    base = modes["finetune"]["seconds"]
    rows = [[m, "random fillers" if m == "scratch" else "pretrained", result["iterations"], v["seconds"],
             v["seconds"] / base, v["accuracy"]] for m, v in modes.items()]
    return {"title": "3. Q2 time to accuracy (offline demo task)", **result, "tables": [table(
        "Wall time and validation accuracy at equal iterations (time ratio < 1: faster than full fine-tuning)",
        ["mode", "starts from", "iterations", "wall time (s)", "time / finetune", "validation accuracy"], rows,
        f"Source: {result['source']}. Wall time: training with its test passes; cached_features includes the "
        "one-off feature extraction (and its mirrored copies).")]}


def main(argv=None):
    child_main(run, argv)


if __name__ == "__main__":
    main()
