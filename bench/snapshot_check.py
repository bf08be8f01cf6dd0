"""What checking a snapshot by content costs: a full-size AlexNet snapshot (61 M weights: a 244 MB .caffemodel
and a 244 MB .solverstate of SGD momentum history), recorded and verified as tools.snapshots does before a
resume, against what the resume pays anyway (pycaffe loading the weights) and `sha256sum` on the same files.

The weights are AlexNet's shapes filled by Caffe's own fillers (the numbers do not matter to a checksum or a
parse, only the size and layout do); the snapshot is written by pycaffe (Net.save) and its solverstate by
caffe_pb2 with one history blob per learnable blob, as Caffe's SGD solver writes it.
"""

import statistics
import subprocess
import time
from pathlib import Path

from bench.common import child_main, table
from tools import alexnet, snapshots


def make_snapshot(folder: Path) -> Path:
    import caffe
    from caffe.proto import caffe_pb2

    deploy = folder / "deploy.prototxt"
    deploy.write_text(str(alexnet.deploy(num_classes=1000, batch_size=1)))
    net = caffe.Net(str(deploy), caffe.TEST)
    model = folder / "snap_iter_1000.caffemodel"
    net.save(str(model))
    state = caffe_pb2.SolverState(iter=1000, learned_net=str(model), current_step=0)
    for blobs in net.params.values():
        for b in blobs:
            h = state.history.add()
            h.shape.dim.extend(b.data.shape)
            h.data.extend(b.data.ravel() * 0.01)
    path = folder / "snap_iter_1000.solverstate"
    path.write_bytes(state.SerializeToString())
    return path


def timed(fn, runs) -> dict:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return {"runs": out, "median": statistics.median(out)}


def run(quick, work):
    import caffe

    runs = 1 if quick else 3
    state = make_snapshot(Path(work))
    model = snapshots.caffemodel_of(state)
    mb = (state.stat().st_size + model.stat().st_size) / 1e6
    deploy = Path(work) / "deploy.prototxt"
    steps = {
        "record: SHA-256 of both files (once, when Caffe has written them)":
            lambda: snapshots.record_checksums(state),
        "verify: SHA-256 of both files against the record": lambda: snapshots.verify_checksums(state),
        "structure and finite weights (check_snapshot: parse, shapes, NaN/inf)":
            lambda: snapshots.check_snapshot(state),
        "the whole check before a resume (usable_snapshot)":
            lambda: snapshots.usable_snapshot(state.parent / "snap", say=lambda _: None),
        "peer: pycaffe loading the weights (Net + copy_from), which a resume pays anyway":
            lambda: caffe.Net(str(deploy), str(model), caffe.TEST),
        "peer: sha256sum of both files": lambda: subprocess.run(["sha256sum", str(state), str(model)], check=True,
                                                               capture_output=True),
    }
    results = {name: timed(fn, runs) for name, fn in steps.items()}
    whole = results["the whole check before a resume (usable_snapshot)"]["median"]
    load = results["peer: pycaffe loading the weights (Net + copy_from), which a resume pays anyway"]["median"]
    rows = [[name, r["median"], mb / r["median"], r["median"] / load] for name, r in results.items()]
    return {"title": "8. Checking a snapshot by content", "megabytes": mb, "whole_check_s": whole,
            "weights_load_s": load, "results": results, "tables": [table(
                f"A full AlexNet snapshot, {mb:.0f} MB in two files: seconds (median of {runs})",
                ["step", "seconds", "MB/s", "/ loading the weights"], rows,
                "usable_snapshot verifies the recorded SHA-256 of both files, then parses them (shapes, history) and "
                "checks every weight is finite; it runs before every resume and every 'already trained'.")]}


def main(argv=None):
    child_main(run, argv)


if __name__ == "__main__":
    main()
