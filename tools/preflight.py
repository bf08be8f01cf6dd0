"""What is checked before Caffe starts, so that a mistake ends in one line naming the file, not in a
CHECK failure that aborts Caffe (or, worse, a run that trains on wrong data without a word):

  - the data every net of the solver reads: every LMDB whole (a truncated data.mdb kills Caffe with SIGBUS),
    every label of the LMDBs and ImageData lists that feed a loss within [0, the scoring layer's num_output)
    (Caffe's softmax loss on the CPU takes any label), every ImageData image present, mean files readable
    BlobProtos: check_inputs;
  - `-weights`: a parsable Caffe weights file whose layers fit the net: check_weights;
  - the shapes of the net's learnable blobs, as Caffe builds it, for the snapshot checks: net_shapes.
"""

import atexit
import contextlib
import functools
import hashlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from tools import paths
from tools.errors import ToolkitError


class InputError(ToolkitError):
    """Input Caffe would mishandle (a label out of range, a truncated LMDB, a bad mean or weights file)."""


# The child that builds nets for net_shapes: one per run of the toolkit (per PYTHONPATH), started on the first
# request and kept, so that `import caffe` is paid once rather than once per net (a finished `make demo` checks 18
# nets' snapshots: 0.54 s each in a child of its own). A request is a JSON line {net, cwd, level, stages}; the
# answer one line "SHAPES <json>", or "SHAPES null" where pycaffe raised. A CHECK failure aborts the child: its
# stdout ends, that request has no answer, and the next request starts a new child.
_SHAPES_WORKER = """
import json, os, sys
import caffe
for line in sys.stdin:
    request = json.loads(line)
    try:
        os.chdir(request["cwd"])
        net = caffe.Net(request["net"], caffe.TRAIN, level=request["level"], stages=request["stages"])
        shapes = [[name, [list(b.data.shape) for b in blobs]] for name, blobs in net.params.items()]
        del net
    except Exception:
        shapes = None
    print("SHAPES " + json.dumps(shapes), flush=True)
"""
_workers: dict[tuple, subprocess.Popen] = {}
_workers_lock = threading.Lock()


def _worker(pythonpath) -> subprocess.Popen:
    proc = _workers.get(pythonpath)
    if proc is None or proc.poll() is not None:
        env = {**paths.caffe_env(pythonpath), "GLOG_minloglevel": "2"}
        proc = _workers[pythonpath] = subprocess.Popen(
            [sys.executable, "-c", _SHAPES_WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, cwd=paths.REPO)
    return proc


def _answer(proc, timeout) -> bytes | None:
    """The worker's next SHAPES line (other lines, e.g. a Python layer's prints, are skipped), or None when it ends
    or does not answer within `timeout` seconds (then it is stopped)."""
    deadline, buffered = time.monotonic() + timeout, b""
    fd = proc.stdout.fileno()
    while True:
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            if line.startswith(b"SHAPES "):
                return line[len(b"SHAPES "):]
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            proc.kill()
            proc.wait()  # so that the next request sees it ended and starts another
            return None
        chunk = os.read(fd, 65536)
        if not chunk:  # the child ended: a CHECK failure aborted it
            proc.wait()
            return None
        buffered += chunk


@atexit.register
def _stop_workers():
    for proc in _workers.values():
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the worker's loop ends at the end of its input


def net_shapes(solver_param, cwd=paths.REPO, pythonpath=()) -> dict[str, list[tuple]] | None:
    """{layer: [learnable blob shapes]} of the solver's TRAIN net, as Caffe builds it, or None if it cannot
    be built (Caffe then says why when it runs). Built in a child process (see _SHAPES_WORKER): a CHECK failure in
    net set-up aborts the process it happens in."""
    net = solver_param.net or solver_param.train_net
    if not net:
        return None
    path = Path(cwd) / net
    try:
        key = (str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest())
    except OSError:
        return None
    state = solver_param.train_state
    return _net_shapes(key, str(cwd), state.level, tuple(state.stage), tuple(map(str, pythonpath)))


@functools.cache
def _net_shapes(key, cwd, level, stages, pythonpath, timeout=600):
    request = json.dumps({"net": key[0], "cwd": cwd, "level": level, "stages": list(stages)}) + "\n"
    with _workers_lock:
        proc = _worker(pythonpath)
        try:
            proc.stdin.write(request.encode())
            proc.stdin.flush()
        except OSError:  # it died since the last request
            proc.kill()
            proc.wait()
            return None
        answer = _answer(proc, timeout)
    shapes = json.loads(answer) if answer else None
    if shapes is None:
        return None
    return {name: [tuple(s) for s in blob_shapes] for name, blob_shapes in shapes}


def check_weights(weights, solver_param, cwd=paths.REPO, pythonpath=()):
    """-weights must be a Caffe weights file whose layers fit the net by Caffe's rules (tools.weights),
    else Caffe aborts the process (or, for random bytes, fails to parse it without naming it)."""
    from tools import weights as caffe_weights

    path = Path(cwd) / weights
    if not path.exists():
        raise InputError(f"weights file {weights} not found (cwd {cwd}). Fix: give the path of a .caffemodel")
    try:
        caffe_weights.read_net(path)
        shapes = net_shapes(solver_param, cwd, pythonpath)
        if shapes is not None:
            caffe_weights.check_fits(shapes, path)
    except ValueError as e:
        raise InputError(str(e)) from None


def _num_outputs(net) -> dict[str, tuple[int, str]]:
    """{label blob: (classes, scoring layer)} for each loss/accuracy layer fed by an InnerProduct or
    Convolution: Caffe's softmax loss on the CPU takes any label without a check."""
    producers = {}
    for layer in net.layer:
        for top in layer.top:
            if layer.type == "InnerProduct":
                producers[top] = (layer.inner_product_param.num_output, layer.name)
            elif layer.type == "Convolution":
                producers[top] = (layer.convolution_param.num_output, layer.name)
            elif top not in layer.bottom:  # an in-place layer keeps the producer
                producers.pop(top, None)
    classes = {}
    for layer in net.layer:
        if layer.type in ("SoftmaxWithLoss", "Accuracy", "MultinomialLogisticLoss", "InfogainLoss") \
                and len(layer.bottom) >= 2 and layer.bottom[0] in producers:
            k = producers[layer.bottom[0]]
            if layer.bottom[1] not in classes or k[0] < classes[layer.bottom[1]][0]:
                classes[layer.bottom[1]] = k
    return classes


@functools.cache
def _list_labels(path: str, size: int, mtime_ns: int):
    """[(line number, image, label)] of an ImageData list (cached while the file is unchanged)."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.strip().rsplit(maxsplit=1)  # Caffe: the label is the last field, the path may hold spaces
        if not parts:
            continue
        if len(parts) < 2:
            raise InputError(f"{path}:{n}: '{line.strip()}' has no label. Fix: write 'image_path label' lines")
        try:
            rows.append((n, parts[0], int(parts[1])))
        except ValueError:
            raise InputError(f"{path}:{n}: label '{parts[1]}' is not an integer. Fix: write 'image_path label' "
                             "lines with class indices from 0") from None
    return rows


def check_inputs(solver_param, cwd=paths.REPO):
    """The data every net of the solver reads, checked before Caffe sees it (see the module's docstring)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    from tools import lmdb_io

    files = [f for f in (solver_param.net, solver_param.train_net, *solver_param.test_net) if f]
    for net_file in dict.fromkeys(files):
        net = caffe_pb2.NetParameter()
        try:
            text_format.Merge((Path(cwd) / net_file).read_text(), net)
        except (OSError, text_format.ParseError):
            continue  # Caffe names the file and the line itself
        classes = _num_outputs(net)
        for layer in net.layer:
            where = f"(layer '{layer.name}' of {net_file})"
            if layer.HasField("transform_param") and layer.transform_param.mean_file:
                mean = Path(cwd) / layer.transform_param.mean_file
                try:
                    lmdb_io.read_mean(mean)
                except (ValueError, FileNotFoundError) as e:
                    raise InputError(f"{e} {where}") from None
            k = classes.get(layer.top[1]) if len(layer.top) > 1 else None
            if layer.type == "Data" and layer.data_param.backend == caffe_pb2.DataParameter.LMDB:
                source = Path(cwd) / layer.data_param.source
                try:
                    lmdb_io.check_pages(source, fix=f"prepare the data again {where}")
                    counts = lmdb_io.label_counts(source) if k else {}
                except lmdb_io.LmdbError as e:
                    raise InputError(str(e)) from None
                bad = sorted(label for label in counts if not 0 <= label < k[0])
                if bad:
                    raise InputError(
                        f"{source} holds {counts[bad[0]]} record(s) with label {bad[0]}, outside 0..{k[0] - 1}: the "
                        f"net's layer '{k[1]}' scores {k[0]} classes {where}. Fix: write the LMDB with labels from 0 "
                        f"to {k[0] - 1}, or give '{k[1]}' num_output {max(counts) + 1}")
            elif layer.type == "ImageData":
                p = layer.image_data_param
                source = Path(cwd) / p.source
                if not source.is_file():
                    raise InputError(f"image list {source} not found {where}. Fix: create it, or fix the source path")
                st = source.stat()
                rows = _list_labels(str(source), st.st_size, st.st_mtime_ns)
                if not rows:
                    raise InputError(f"{source} lists no images {where}. Fix: write 'image_path label' lines")
                for n, image, label in rows:
                    if k and not 0 <= label < k[0]:
                        raise InputError(
                            f"{source}:{n}: label {label} is outside 0..{k[0] - 1}: the net's layer '{k[1]}' scores "
                            f"{k[0]} classes {where}. Fix: correct the label (class indices count from 0), or give "
                            f"'{k[1]}' num_output {max(r[2] for r in rows) + 1}")
                    # Caffe builds the path by string concatenation: root_folder + name
                    if not (Path(cwd) / (p.root_folder + image)).is_file():
                        raise InputError(f"{source}:{n}: image {p.root_folder + image} not found (cwd {cwd}) {where}. "
                                         "Fix: fetch the image again (download_wikiart.py fetches what is missing), "
                                         "or remove the line")
