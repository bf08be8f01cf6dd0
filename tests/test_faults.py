"""Faults injected by hand, as a hostile but fair user would: kill -9 and SIGTERM mid-run, truncated
snapshots and LMDBs, a log cut mid-line, two runs at once, a full disk (a file-size limit), bad labels,
bad counts, bad mean, weights and image files. Each ends in a correct result or one clear line, and
nothing that was finished is lost; the rerun recovers. Real `caffe` binary, real pycaffe, real data."""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import caffe
import numpy as np
import pytest
from caffe import layers as L
from caffe import params as P
from conftest import REPO, write_prototxt
from PIL import Image

from q1_dropout_augment import data, experiment
from q2_wikiart_finetune import experiment as q2_experiment
from q2_wikiart_finetune import predict
from q2_wikiart_finetune import task as q2_tasks
from tools import caffe_runner, lmdb_io, locks, preflight, snapshots
from tools.parse_log import parse_lines, parse_log
from tools.solver import make_solver, write_solver
from tools.transform import mean_bgr

pytestmark = pytest.mark.slow  # trains or runs Caffe at length: not in `make test-fast`

RUNNER = [sys.executable, "-m", "tools.caffe_runner"]


def tiny_net(path, train_src, val_src, *, conv=8, mean_file=None, classes=10):
    """Data (TRAIN) and Data (TEST) -> conv -> fc -> accuracy and softmax loss: trains ~1,500 it/s."""
    tp = dict(scale=1 / 255, **({"mean_file": str(mean_file)} if mean_file else {}))
    n = caffe.NetSpec()
    n.data, n.label = L.Data(source=str(train_src), backend=P.Data.LMDB, batch_size=32, ntop=2, transform_param=tp,
                             include=dict(phase=caffe.TRAIN))
    n.conv = L.Convolution(n.data, num_output=conv, kernel_size=5, stride=2, weight_filler=dict(type="xavier"))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.fc = L.InnerProduct(n.relu, num_output=classes, weight_filler=dict(type="xavier"))
    n.accuracy = L.Accuracy(n.fc, n.label, include=dict(phase=caffe.TEST))
    n.loss = L.SoftmaxWithLoss(n.fc, n.label)
    net = n.to_proto()
    t = caffe.NetSpec()
    t.data, t.label = L.Data(source=str(val_src), backend=P.Data.LMDB, batch_size=50, ntop=2, transform_param=tp,
                             include=dict(phase=caffe.TEST))
    net.layer.insert(1, t.to_proto().layer[0])
    return write_prototxt(path, net)


def tiny_solver(folder, net, *, max_iter, snapshot, test_interval, display=5):
    return write_solver(make_solver(
        net=str(net), base_lr=0.01, momentum=0.9, lr_policy="fixed", max_iter=max_iter, display=display,
        test_iter=[2], test_interval=test_interval, snapshot=snapshot, snapshot_prefix=str(folder / "snap"),
        random_seed=7, solver_mode="CPU"), folder / "solver.prototxt")


@pytest.fixture
def make_run(tmp_path, small_lmdb):
    """solver(max_iter, snapshot, test_interval) -> solver.prototxt in tmp_path, on the shared small LMDBs."""

    def make(max_iter, snapshot, test_interval, **net_options):
        net = tiny_net(tmp_path / "net.prototxt", small_lmdb / "train_lmdb", small_lmdb / "test_lmdb", **net_options)
        return tiny_solver(tmp_path, net, max_iter=max_iter, snapshot=snapshot, test_interval=test_interval)

    return make


def children(pid) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def start_past_first_snapshot(tmp_path, make_run):
    """A runner training 3,000 iterations, returned once its first snapshot (iteration 500) exists:
    (solver, log, the command, the runner's Popen)."""
    solver = make_run(max_iter=3000, snapshot=500, test_interval=1000)
    log = tmp_path / "train.log"
    cmd = [*RUNNER, str(solver), "--log", str(log)]
    runner = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (tmp_path / "snap_iter_500.solverstate").exists())
    return solver, log, cmd, runner


def wait_for(condition, timeout=60.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.002)


def good_snapshots(folder) -> dict[str, bytes]:
    """Bytes of every snapshot pair that passes the runner's check: the work a run has finished."""
    kept = {}
    for state in folder.glob("snap_iter_*.solverstate"):
        try:
            model = snapshots.check_snapshot(state)
        except snapshots.SnapshotDamaged:
            continue
        kept[state.name], kept[model.name] = state.read_bytes(), model.read_bytes()
    return kept


def assert_unchanged(folder, kept):
    assert kept and {name: (folder / name).read_bytes() for name in kept} == kept, "finished snapshots changed"


def error_line(stderr) -> str:
    """The runner's last line (tqdm's progress bar shares stderr); never a traceback."""
    assert "Traceback" not in stderr, stderr
    return stderr.replace("\r", "\n").strip().splitlines()[-1]


def assert_each_iteration_once(log, max_iter, display=5):
    parsed = parse_log(log)
    train = [r["NumIters"] for r in parsed.train]
    assert train == sorted(set(train)) and train[-1] == max_iter - display, "an iteration twice, or out of order"
    tests = [r["NumIters"] for r in parsed.test(0)]
    assert tests == sorted(set(tests)) and tests[-1] == max_iter


# ---- kill -9, SIGTERM ---------------------------------------------------------------------------------------


def test_kill_9_of_caffe_is_reported_as_killed_and_the_rerun_resumes(tmp_path, make_run):
    solver, log, cmd, runner = start_past_first_snapshot(tmp_path, make_run)
    [caffe_pid] = children(runner.pid)
    os.kill(caffe_pid, signal.SIGKILL)
    _, err = runner.communicate(timeout=60)
    line = error_line(err)
    assert runner.returncode != 0 and "caffe train was killed (SIGKILL" in err, err
    assert "The last good snapshot is" in err and "run the same command again to resume from it" in err, err
    assert line.startswith("error: caffe train was killed (SIGKILL") and line.endswith(f"; log: {log}")
    kept = good_snapshots(tmp_path)
    assert "snap_iter_500.solverstate" in kept

    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert_unchanged(tmp_path, kept)
    assert_each_iteration_once(log, 3000)


def test_sigterm_to_the_runner_snapshots_and_says_how_to_resume(tmp_path, make_run):
    solver, log, cmd, runner = start_past_first_snapshot(tmp_path, make_run)
    runner.send_signal(signal.SIGTERM)
    _, err = runner.communicate(timeout=60)
    line = error_line(err)
    assert runner.returncode == 130 and line.startswith("terminated (SIGTERM): Caffe saved a snapshot"), err
    stopped_at = snapshots.latest_snapshot(solver)[1]
    assert 500 < stopped_at < 3000 and f"snap_iter_{stopped_at}.solverstate: run the same command again" in line
    kept = good_snapshots(tmp_path)
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and f"iterations {stopped_at}..3000" in again.stdout, again.stderr
    assert_unchanged(tmp_path, kept)
    assert_each_iteration_once(log, 3000)


# ---- snapshots ----------------------------------------------------------------------------------------------


def caffe_of(runner_pid) -> int:
    wait_for(lambda: children(runner_pid))
    return children(runner_pid)[0]


def gone(pid) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited


def _read_or_empty(fd) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    except OSError:  # EIO: the other side has gone
        return b""


def test_closing_the_terminal_snapshots_stops_and_says_how_to_resume(tmp_path, make_run):
    """The runner on a real pseudo-terminal that is its controlling terminal; closing the terminal's other
    end is what an SSH drop does: the kernel sends SIGHUP, and writes to the terminal fail from then on."""
    import pty
    import select
    import termios
    from fcntl import ioctl

    solver = make_run(max_iter=3000, snapshot=500, test_interval=1000)
    log = tmp_path / "train.log"
    cmd = [*RUNNER, str(solver), "--log", str(log)]
    primary, terminal = pty.openpty()

    def own_terminal():
        os.setsid()
        ioctl(0, termios.TIOCSCTTY, 0)

    runner = subprocess.Popen(cmd, cwd=REPO, stdin=terminal, stdout=terminal, stderr=terminal,
                              preexec_fn=own_terminal)
    os.close(terminal)
    snapshot = tmp_path / "snap_iter_500.solverstate"
    deadline = time.time() + 60
    while not snapshot.exists() and time.time() < deadline:  # show what the bar draws, as a terminal would
        if select.select([primary], [], [], 0.01)[0]:
            _read_or_empty(primary)
    caffe_pid = caffe_of(runner.pid)
    os.close(primary)  # the terminal goes away
    assert runner.wait(timeout=60) != 0
    wait_for(lambda: gone(caffe_pid))
    text = log.read_text()
    stopped_at = snapshots.latest_snapshot(solver)[1]
    assert 500 <= stopped_at < 3000 and "# toolkit: SIGHUP: asked caffe to snapshot and stop" in text
    assert f"Snapshotting solver state to binary proto file {tmp_path}/snap_iter_{stopped_at}.solverstate" in text
    assert "Optimization stopped early" in text
    kept = good_snapshots(tmp_path)
    assert f"snap_iter_{stopped_at}.solverstate" in kept
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert_each_iteration_once(log, 3000)


def test_a_runner_killed_with_kill_9_leaves_caffe_to_snapshot_and_stop_with_the_log_whole(tmp_path, make_run):
    solver, log, cmd, runner = start_past_first_snapshot(tmp_path, make_run)
    caffe_pid = caffe_of(runner.pid)
    runner.kill()
    runner.wait(timeout=60)
    wait_for(lambda: gone(caffe_pid))
    text = log.read_text()
    stopped_at = snapshots.latest_snapshot(solver)[1]
    # Caffe heard of its parent's death (SIGINT), snapshotted where it was, and wrote that into the log itself
    assert 500 <= stopped_at < 3000 and "Optimization stopped early" in text
    assert f"snap_iter_{stopped_at}.solverstate" in good_snapshots(tmp_path)
    last = [int(m) for m in re.findall(r"Iteration (\d+) \(", text)][-1]
    assert last >= stopped_at - 5, "the log holds every iteration Caffe printed"
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert_each_iteration_once(log, 3000)


def test_the_log_on_disk_keeps_up_with_caffe(tmp_path, make_run):
    solver, log, cmd, runner = start_past_first_snapshot(tmp_path, make_run)
    # the snapshot exists: the log already says Caffe wrote it (glog writes each line as it logs it)
    assert "snap_iter_500.solverstate" in log.read_text()
    runner.send_signal(signal.SIGINT)
    runner.communicate(timeout=60)
    assert runner.returncode == 130


@pytest.mark.parametrize("part", ["solverstate", "caffemodel"])
def test_a_truncated_newest_snapshot_is_moved_aside_and_training_resumes_before_it(tmp_path, make_run, part):
    solver = make_run(max_iter=60, snapshot=20, test_interval=20)
    log = tmp_path / "train.log"
    caffe_runner.train(solver, log, progress=False)
    kept = {k: v for k, v in good_snapshots(tmp_path).items() if "_iter_60." not in k}
    broken = tmp_path / f"snap_iter_60.{part}"
    cut = broken.read_bytes()[: broken.stat().st_size * 229_376 // 257_435]  # as a full disk left it in the report
    broken.write_bytes(cut)

    notes = []
    result = caffe_runner.train(solver, log, progress=False, say=notes.append)
    assert not result.already_done, "a damaged final snapshot is not 'already trained'"
    assert (result.start_iter, result.final_iter) == (40, 60)
    assert any(f"snap_iter_60.{part}" in n and "Moved aside" in n for n in notes), notes
    assert (tmp_path / f"snap_iter_60.{part}.broken").read_bytes() == cut, "moved aside, not deleted"
    snapshots.check_snapshot(tmp_path / "snap_iter_60.solverstate")  # the new one is whole
    assert_unchanged(tmp_path, kept)
    assert_each_iteration_once(log, 60)
    assert parse_log(log).test(0)[-1]["NumIters"] == 60, "the result is that of the last iteration"


def test_a_snapshot_changed_on_disk_without_changing_its_size_is_moved_aside(tmp_path, make_run):
    solver = make_run(max_iter=1000, snapshot=500, test_interval=1000)
    log = tmp_path / "train.log"
    cmd = [*RUNNER, str(solver), "--log", str(log)]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    record = (tmp_path / "snap_iter_1000.sha256").read_text()
    check = subprocess.run(["sha256sum", "-c", "snap_iter_1000.sha256"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0 and "snap_iter_1000.caffemodel: OK" in check.stdout, "sha256sum reads the record"
    model = tmp_path / "snap_iter_1000.caffemodel"
    data = bytearray(model.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4] = b"\x00\x00\x80\x3f"  # a weight set to 1.0: still parses
    model.write_bytes(bytes(data))
    snapshots.check_snapshot(tmp_path / "snap_iter_1000.solverstate")  # the structure check alone trusts it
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "snap_iter_1000.caffemodel changed on disk after Caffe wrote it" in again.stderr
    assert "already trained" not in again.stdout and "done: iterations 500..1000" in again.stdout
    assert (tmp_path / "snap_iter_1000.caffemodel.broken").read_bytes() == bytes(data), "moved aside, kept"
    assert (tmp_path / "snap_iter_1000.sha256.broken").read_text() == record
    assert (tmp_path / "snap_iter_1000.sha256").exists(), "the retrained snapshot has its own record"


def test_a_snapshot_with_nan_weights_is_moved_aside(tmp_path, make_run):
    from caffe.proto import caffe_pb2

    solver = make_run(max_iter=1000, snapshot=500, test_interval=1000)
    log = tmp_path / "train.log"
    cmd = [*RUNNER, str(solver), "--log", str(log)]
    assert subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120).returncode == 0
    model = tmp_path / "snap_iter_1000.caffemodel"
    net = caffe_pb2.NetParameter.FromString(model.read_bytes())
    layer = next(la for la in net.layer if la.blobs)
    layer.blobs[0].data[0] = float("nan")
    model.write_bytes(net.SerializeToString())
    snapshots.record_checksums(tmp_path / "snap_iter_1000.solverstate")  # as if Caffe had written the NaN itself
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"layer '{layer.name}' holds NaN or infinite weights" in again.stderr
    assert "done: iterations 500..1000" in again.stdout


def test_a_snapshot_of_another_net_is_refused_and_fresh_moves_it_aside_until_done(tmp_path, make_run):
    solver = make_run(max_iter=20, snapshot=10, test_interval=10)
    log = tmp_path / "train.log"
    caffe_runner.train(solver, log, progress=False)
    kept, old_log = good_snapshots(tmp_path), log.read_bytes()

    make_run(max_iter=40, snapshot=10, test_interval=10, conv=6)  # the same prefix, another net
    with pytest.raises(snapshots.SnapshotMismatch, match=r"snap_iter_20.solverstate was written by another net.*"
                                                            r"Nothing was changed.*--fresh"):
        caffe_runner.train(solver, log, progress=False)
    assert_unchanged(tmp_path, kept)

    # --fresh whose run fails: the old run stays moved aside, whole
    (tmp_path / "net.prototxt").write_text((tmp_path / "net.prototxt").read_text().replace('"ReLU"', '"NoSuchLayer"'))
    with pytest.raises(caffe_runner.CaffeError, match="Unknown layer type: NoSuchLayer"):
        caffe_runner.train(solver, log, progress=False, fresh=True, say=lambda _: None)
    [aside] = tmp_path.glob("snap.replaced-*")
    assert_unchanged(aside, kept)
    assert (aside / "train.log").read_bytes() == old_log
    # the new run completes: only then is the replaced run removed
    make_run(max_iter=40, snapshot=10, test_interval=10, conv=6)
    notes = []
    result = caffe_runner.train(solver, log, progress=False, say=notes.append)
    assert (result.start_iter, result.final_iter) == (0, 40)
    assert not aside.exists() and any("removed the run it replaced" in n for n in notes)


def test_fresh_keeps_the_snapshots_moved_aside_as_broken(tmp_path, make_run):
    solver = make_run(max_iter=20, snapshot=10, test_interval=10)
    log = tmp_path / "train.log"
    caffe_runner.train(solver, log, progress=False)
    model = tmp_path / "snap_iter_20.caffemodel"
    cut = model.read_bytes()[: model.stat().st_size // 2]
    model.write_bytes(cut)
    caffe_runner.train(solver, log, progress=False, say=lambda _: None)  # moves the damaged one aside, retrains
    broken = tmp_path / "snap_iter_20.caffemodel.broken"
    assert broken.read_bytes() == cut
    # a replaced folder left by an earlier version, which swept a .broken file in with the run's snapshots
    legacy = tmp_path / "snap.replaced-20260101-000000-1"
    legacy.mkdir()
    (legacy / "snap_iter_10.caffemodel").write_bytes(b"an old run's snapshot")
    (legacy / "snap_iter_20.caffemodel.broken").write_bytes(b"an older damaged snapshot")

    p = subprocess.run([*RUNNER, str(solver), "--log", str(log), "--fresh"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert ("removed the run it replaced (snap.replaced-20260101-000000-1); kept what had been moved aside, now "
            "beside it: snap_iter_20.caffemodel.broken.2") in p.stderr, p.stderr
    assert not list(tmp_path.glob("snap.replaced-*")), "the replaced runs' snapshots and logs are removed"
    assert broken.read_bytes() == cut, "--fresh deleted a file the toolkit had moved aside"
    assert (tmp_path / "snap_iter_20.caffemodel.broken.2").read_bytes() == b"an older damaged snapshot"
    assert snapshots.check_snapshot(tmp_path / "snap_iter_20.solverstate")
    assert [r["NumIters"] for r in parse_log(log).test(0)] == [0, 10, 20], "the new run is whole"


# ---- logs ---------------------------------------------------------------------------------------------------


def glog(it_line, text):
    return f"I1128 10:00:{it_line:02d}.000000  1 solver.cpp:1] {text}"


CUT_LOG = [
    "# toolkit: caffe train -solver=s.prototxt (cwd .)",
    glog(0, "Solving net"),
    glog(1, "Iteration 0, Testing net (#0)"),
    glog(1, "    Test net output #0: accuracy = 0.1"),
    glog(2, "Iteration 0 (0 iter/s), loss = 2.0"),
    glog(2, "    Train net output #0: loss = 2.0 (* 1 = 2.0 loss)"),
    glog(3, "Iteration 10 (5 iter/s), loss = 1.0"),
    glog(3, "    Train net output #0: loss = 1.0 (* 1 = 1.0 loss)"),
    glog(4, "Iteration 20, Testing net (#0)"),
    glog(4, "    Test net output #0: accuracy = 0.5"),
    glog(5, "Iteration 20 (5 iter/s), loss = 0.9"),
    glog(5, "    Train net output #0: loss = 0.9 (* 1 = 0.9 loss)"),
    glog(6, "Iteration 30 (5 iter/s), loss = 0.8"),
    # killed mid-line (0.75 cut to 0.7), and the next run's marker appended straight after it
    glog(6, "    Train net output #0: loss = 0.7") + "# toolkit: caffe train -snapshot=snap_iter_20.solverstate",
    glog(10, "Resuming from snap_iter_20.solverstate"),
    glog(10, "Solving net"),
    glog(11, "Iteration 20, Testing net (#0)"),
    glog(11, "    Test net output #0: accuracy = 0.55"),
    glog(12, "Iteration 20 (5 iter/s), loss = 0.95"),
    glog(12, "    Train net output #0: loss = 0.95 (* 1 = 0.95 loss)"),
    glog(13, "Iteration 30 (5 iter/s), loss = 0.85"),
    glog(13, "    Train net output #0: loss = 0.85 (* 1 = 0.85 loss)"),
]


def test_parse_log_known_answer_for_a_log_cut_mid_line(tmp_path):
    want_train = [(0, 2.0), (10, 1.0), (20, 0.95), (30, 0.85)]
    want_test = [(0, 0.1), (20, 0.55)]
    for lines in (CUT_LOG, [line.replace("# toolkit:", "# run:") for line in CUT_LOG]):  # markers, or Solving only
        log = parse_lines(lines)
        assert [(r["NumIters"], r["loss"]) for r in log.train] == want_train
        assert [(r["NumIters"], r["accuracy"]) for r in log.test(0)] == want_test
    # a file whose last line has no newline: that line was cut (or is being written), its number unreliable
    (tmp_path / "cut.log").write_text("\n".join(CUT_LOG[:13]) + "\n" + CUT_LOG[13].split("#")[0])
    assert [r["NumIters"] for r in parse_log(tmp_path / "cut.log").train] == [0, 10, 20]


def test_a_resumed_log_cut_mid_line_counts_each_iteration_once(tmp_path, make_run):
    solver = make_run(max_iter=40, snapshot=20, test_interval=20)
    log = tmp_path / "train.log"
    caffe_runner.train(solver, log, progress=False)
    (tmp_path / "never-written").mkdir()
    for f in tmp_path.glob("snap_iter_40.*"):  # as if killed before its last snapshot...
        f.rename(tmp_path / "never-written" / f.name)
    text = log.read_text()
    cut = text.index("Train net output", text.index("] Iteration 35 ")) + len("Train net ou")  # ...and mid-line
    log.write_text(text[:cut])

    result = caffe_runner.train(solver, log, progress=False)
    assert result.start_iter == 20
    lines = log.read_text().splitlines()
    marker = next(i for i, line in enumerate(lines) if i > 0 and "# toolkit:" in line)
    assert lines[marker].startswith("# toolkit:") and lines[marker - 1].endswith("Train net ou")
    assert_each_iteration_once(log, 40)
    resumed = parse_lines(lines[marker:]).train
    assert [(r["NumIters"], r["loss"]) for r in parse_log(log).train[-3:]] == \
        [(r["NumIters"], r["loss"]) for r in resumed[-3:]], "rows after the resume point come from the resumed run"


# ---- data ---------------------------------------------------------------------------------------------------


def test_a_truncated_lmdb_is_refused_before_caffe_maps_it(tmp_path, small_lmdb):
    shutil.copytree(small_lmdb / "train_lmdb", tmp_path / "train_lmdb")
    data_mdb = tmp_path / "train_lmdb/data.mdb"
    os.truncate(data_mdb, data_mdb.stat().st_size // 2)
    net = tiny_net(tmp_path / "net.prototxt", tmp_path / "train_lmdb", small_lmdb / "test_lmdb")
    solver = tiny_solver(tmp_path, net, max_iter=10, snapshot=0, test_interval=10)
    proc = subprocess.run([*RUNNER, str(solver), "--log", str(tmp_path / "train.log")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    line = error_line(proc.stderr)
    assert proc.returncode != 0 and line.startswith(f"error: {data_mdb} is truncated: "), proc.stderr
    assert "but its pages need" in line and "Fix: prepare the data again (layer 'data' of" in line
    assert not (tmp_path / "train.log").exists(), "refused before Caffe started"
    with pytest.raises(lmdb_io.LmdbError, match="truncated"):
        lmdb_io.check(tmp_path / "train_lmdb")


def test_labels_outside_the_classes_are_refused_before_caffe_starts(tmp_path, small_lmdb, fashion):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(fashion.train_images[i, 0]).save(images / f"{i}.png")
    listing = tmp_path / "train.txt"
    listing.write_text("0.png 3\n1.png 12\n2.png 1\n3.png 0\n")
    n = caffe.NetSpec()
    n.data, n.label = L.ImageData(source=str(listing), root_folder=f"{images}/", batch_size=2, is_color=False, ntop=2)
    n.fc = L.InnerProduct(n.data, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.fc, n.label)
    net = write_prototxt(tmp_path / "image_net.prototxt", n.to_proto())
    solver = write_solver(make_solver(net=str(net), base_lr=0.01, lr_policy="fixed", max_iter=4,
                                      snapshot_prefix=str(tmp_path / "snap"), solver_mode="CPU"),
                          tmp_path / "solver.prototxt")
    proc = subprocess.run([*RUNNER, str(solver), "--log", str(tmp_path / "train.log")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    line = error_line(proc.stderr)
    assert proc.returncode != 0 and line.startswith(f"error: {listing}:2: label 12 is outside 0..9: the net's layer "
                                                    "'fc' scores 10 classes"), proc.stderr
    assert "Fix: correct the label" in line and not (tmp_path / "train.log").exists()

    # an LMDB with label 10 for 10 classes, written without a class count
    labels = fashion.train_labels[:100].copy()
    labels[17] = 10
    lmdb_io.write_arrays(tmp_path / "bad_lmdb", fashion.train_images[:100], labels)
    tiny_net(tmp_path / "net.prototxt", tmp_path / "bad_lmdb", small_lmdb / "test_lmdb")
    solver = tiny_solver(tmp_path, tmp_path / "net.prototxt", max_iter=10, snapshot=0, test_interval=10)
    with pytest.raises(preflight.InputError, match=r"bad_lmdb holds 1 record\(s\) with label 10, outside 0..9"):
        caffe_runner.train(solver, tmp_path / "train.log", progress=False)
    # with one, the writer refuses and writes nothing
    with pytest.raises(lmdb_io.LmdbError, match="record 17 has label 10, outside 0..9"):
        lmdb_io.write_arrays(tmp_path / "refused_lmdb", fashion.train_images[:100], labels, num_classes=10)
    assert not (tmp_path / "refused_lmdb").exists() and not list(tmp_path.glob(".refused_lmdb*"))


def test_bad_mean_weights_and_image_files_are_named(tmp_path, make_run, small_lmdb, fashion, capsys):
    junk = tmp_path / "mean.binaryproto"
    junk.write_bytes(np.random.RandomState(0).bytes(3000))
    solver = make_run(max_iter=10, snapshot=0, test_interval=10, mean_file=junk)
    with pytest.raises(preflight.InputError, match=rf"{junk} is not a BlobProto .*compute_image_mean.*layer 'data'"):
        caffe_runner.train(solver, tmp_path / "train.log", progress=False)
    (tmp_path / "mean.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"mean.npy is not a .npy array"):
        mean_bgr(tmp_path / "mean.npy")
    # the prediction CLI: one line naming the mean file, before any net is loaded
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(fashion.test_images[0, 0]).save(folder / "a.png")
    with pytest.raises(SystemExit, match=rf"^error: {junk} is not a BlobProto"):
        predict.main(["--weights", str(tmp_path / "none.caffemodel"), "--images", str(folder), "--out",
                      str(tmp_path / "s.csv"), "--mean-file", str(junk)])

    weights = tmp_path / "random.caffemodel"
    weights.write_bytes(np.random.RandomState(1).bytes(5000))
    solver = make_run(max_iter=10, snapshot=0, test_interval=10)
    with pytest.raises(preflight.InputError, match=rf"{weights} is not a Caffe weights file"):
        caffe_runner.train(solver, tmp_path / "train.log", weights=weights, progress=False)
    assert not (tmp_path / "train.log").exists()

    (folder / "empty.jpg").write_bytes(b"")
    (folder / "cut.png").write_bytes((folder / "a.png").read_bytes()[:200])
    for name, what in (("empty.jpg", r"is empty \(0 bytes\)"), ("cut.png", "cannot be decoded")):
        with pytest.raises(ValueError, match=rf"{folder / name}.* {what}") as e:
            predict.load_images([folder / name], 32)
        assert "pip install" not in str(e.value)


def test_bad_counts_are_refused_before_any_compute(tmp_path, make_run, capsys):
    assert [experiment.test_interval_for(n, 200) for n in (2000, 4000, 450, 40, 4)] == [200, 200, 150, 40, 4]
    with pytest.raises(ValueError, match=r"--max-iter 997: .*multiple of 200 \(e.g. 1000\)"):
        experiment.test_interval_for(997, 200)
    for bad in ("0", "-5"):
        with pytest.raises(SystemExit) as e:
            experiment.main(["--dataset", "fashion-mnist", "--max-iter", bad])
        assert e.value.code == 2 and f"--max-iter: {bad}: must be at least 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--max-iter 0: give a positive number"):
        experiment.run("fashion-mnist", per_class=2, max_iter=0, repo=tmp_path, progress=False)
    assert not (tmp_path / "data").exists(), "refused before preparing anything"
    for args, message in ((["--max-iter", "0"], "must be at least 1"), (["-i", "0"], "give a positive number"),
                          (["-i", "-5"], "give a positive number"), (["-w", "0"], "0 workers would download nothing")):
        with pytest.raises(SystemExit) as e:
            q2_experiment.main(args)
        assert e.value.code == 2 and message in capsys.readouterr().err
    empty = q2_tasks.with_counts(q2_tasks.WIKIART, 0, 387)
    with pytest.raises(ValueError, match=r"train_count is 0. Fix: data/wikiart/train.txt lists no images: see "
                                         r"data/wikiart/failures.csv"):
        q2_experiment.check_counts(empty)
    solver = make_run(max_iter=0, snapshot=0, test_interval=10)
    with pytest.raises(preflight.InputError, match="max_iter is 0: nothing would be trained"):
        caffe_runner.train(solver, tmp_path / "train.log", progress=False)


# ---- concurrency, full disk ---------------------------------------------------------------------------------


def test_a_second_run_on_the_same_snapshots_refuses_naming_the_first(tmp_path, make_run):
    _, log, cmd, first = start_past_first_snapshot(tmp_path, make_run)
    [caffe_pid] = children(first.pid)
    os.kill(caffe_pid, signal.SIGSTOP)  # hold the first run mid-training, whatever this machine's speed
    try:
        second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        os.kill(caffe_pid, signal.SIGCONT)
    line = error_line(second.stderr)
    assert second.returncode != 0 and f"is in use by PID {first.pid} (since " in line, second.stderr
    assert f"or stop it (kill {first.pid})" in line
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert log.read_text().count("# toolkit:") == 1, "one caffe process wrote the log"
    assert_each_iteration_once(log, 3000)


HOLD = "import sys, time\nfrom tools import locks\nwith locks.locked(sys.argv[1]):\n    print('held', flush=True)\n" \
       "    time.sleep(120)\n"


def test_q1_refuses_while_another_run_holds_its_dataset(tmp_path):
    folder = tmp_path / "data/q1/fashion-mnist"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(locks.Busy, match=rf"data/q1/fashion-mnist is in use by PID {holder.pid} .*"
                                             rf"kill {holder.pid}"):
            experiment.run("fashion-mnist", per_class=2, variants=["baseline"], max_iter=4, repo=tmp_path,
                           progress=False)
    finally:
        holder.kill()  # kill -9: the kernel releases the lock, nothing to clean up
        holder.wait()
    with locks.locked(folder):
        pass
    assert not (folder / "prepared.json").exists()


WRITER = """import sys
import numpy as np
from tools import lmdb_io

seed = int(sys.argv[2])
images = np.random.RandomState(seed).randint(0, 256, (6000, 3, 32, 32)).astype(np.uint8)
lmdb_io.write_arrays(sys.argv[1], images, np.arange(6000) % 10, num_classes=10, source={"seed": seed})
"""


def test_concurrent_lmdb_writers_never_delete_each_others_data(tmp_path):
    path = tmp_path / "x_lmdb"
    stale, live = tmp_path / ".x_lmdb.999999999.abc.tmp", tmp_path / f".x_lmdb.{os.getpid()}.abc.tmp"
    stale.mkdir()
    live.mkdir()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(seed)], cwd=REPO,
                                stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    manifest = lmdb_io.check(path, entries=6000, num_classes=10)
    assert manifest["source"]["seed"] in (1, 2)
    assert not stale.exists(), "a dead writer's temporary folder is cleaned up"
    assert live.exists(), "a live process's temporary folder is left alone"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "x_lmdb"])


def test_a_full_disk_ends_in_one_line_and_the_rerun_recovers(tmp_path, make_run):
    solver = make_run(max_iter=3000, snapshot=500, test_interval=1000)
    log = tmp_path / "train.log"
    cmd = [*RUNNER, str(solver), "--log", str(log)]
    limit = 120_000  # bytes per file: above a snapshot (47 kB), below the whole log (220 kB)

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, preexec_fn=small_disk)
    line = error_line(full.stderr)
    assert full.returncode != 0 and line == (
        f"error: {log}: File too large (errno 27). Fix: raise the file-size limit (ulimit -f) and run the same "
        "command again: it resumes from the last good snapshot"), full.stderr
    assert log.stat().st_size <= limit
    kept = good_snapshots(tmp_path)
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert_unchanged(tmp_path, kept)
    assert_each_iteration_once(log, 3000)
    assert "\n# toolkit:" in log.read_text() and all(
        line.startswith("# toolkit:") for line in log.read_text().splitlines() if "# toolkit:" in line)


def test_os_errors_name_the_file_and_the_fix():
    import errno

    from tools.cli import os_error_line

    full = os_error_line(OSError(errno.ENOSPC, "No space left on device", "/data/run/train.log"))
    # the free space left is that of the nearest folder that exists (tests/test_faults_state.py: a real full disk)
    assert re.fullmatch(r"/data/run/train\.log: No space left on device \(errno 28\): the disk is full \(\S+ \S+ "
                        r"free of \S+ \S+ on the disk that holds /(data/run|data)?\)\. Fix: free space there \(df -h "
                        r"/\S*\) and run the same command again \(a training resumes from its last good snapshot\)",
                        full), full


# ---- Q1: runs identified by their settings ------------------------------------------------------------------


def files_of(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_q1_other_settings_get_their_own_folder_and_finished_runs_stay(q1_first_run, capsys):
    repo, first = q1_first_run
    before = files_of(first / "baseline")
    assert "snap_iter_4.caffemodel" in {p.name for p in before}
    second = experiment.run("fashion-mnist", per_class=2, seed=0, variants=["baseline"], max_iter=6, repo=repo,
                            progress=False)
    assert second != first and second.parent == first.parent and second.name.startswith("fashion-mnist-")
    assert json.loads((second / "settings.json").read_text())["max_iter"] == 6
    assert files_of(first / "baseline") == before, "another run's settings touched a finished run"
    assert [r["NumIters"] for r in parse_log(second / "baseline/train.log").test(0)] == [0, 6]
    capsys.readouterr()
    assert experiment.run("fashion-mnist", per_class=2, seed=0, variants=["baseline"], max_iter=4, repo=repo,
                          progress=False) == first
    assert "already trained (4 iterations)" in capsys.readouterr().out


def test_q1_a_changed_net_is_refused_without_fresh(q1_first_run):
    repo, first = q1_first_run
    stamp = first / "baseline/nets.sha256"
    real = stamp.read_text()
    stamp.write_text("0" * 16 + "\n")  # as if the generator had changed since that run
    before = files_of(first / "baseline")
    try:
        with pytest.raises(experiment.RunExists, match=r"baseline holds a run of another version of this net.*"
                                                       r"nothing was changed. Fix: rerun with --fresh"):
            experiment.run("fashion-mnist", per_class=2, seed=0, variants=["baseline"], max_iter=4, repo=repo,
                           progress=False)
        assert files_of(first / "baseline") == before
    finally:
        stamp.write_text(real)


def test_q1_prepared_data_failing_its_manifest_is_prepared_again(q1_first_run):
    repo, _ = q1_first_run
    val = repo / "data/q1/fashion-mnist/val_lmdb"
    os.truncate(val / "data.mdb", (val / "data.mdb").stat().st_size // 2)  # prepared.json alone would trust it
    logged = []
    info = data.prepare("fashion-mnist", 2, 0, repo, log=logged.append)
    assert "val_lmdb/data.mdb is truncated" in logged[0] and "preparing fashion-mnist again" in logged[0]
    lmdb_io.check(val, entries=info["val_count"], num_classes=10)
    logged.clear()
    data.prepare("fashion-mnist", 2, 0, repo, log=logged.append)
    assert logged == [], "whole data is not prepared again"


# ---- State files: a damaged one is moved aside and made again, or refused in one line -------------------------


CUT = '{"weights": "snap'  # a state file cut short mid-write, as the issue reproduced it


def test_q1_damaged_val_full_and_prepared_json_are_moved_aside_and_made_again(q1_first_run, capsys):
    repo, first = q1_first_run
    cache, marker = first / "baseline/val_full.json", repo / "data/q1/fashion-mnist/prepared.json"
    good = json.loads(cache.read_text())
    cache.write_text(CUT)
    marker.write_text(CUT)
    capsys.readouterr()
    assert experiment.run("fashion-mnist", per_class=2, seed=0, variants=["baseline"], max_iter=4, repo=repo,
                          progress=False) == first
    out = capsys.readouterr().out
    assert f"[q1] {marker} was damaged (not valid JSON: Unterminated string" in out
    assert f"[q1] {cache} was damaged (not valid JSON" in out and "moved aside to val_full.json.broken" in out
    assert "already trained (4 iterations)" in out, "a damaged cache made it train again"
    # kept, not deleted; made again with the same numbers
    assert (first / "baseline/val_full.json.broken").read_text() == CUT
    assert marker.with_name("prepared.json.broken").read_text() == CUT
    assert json.loads(cache.read_text()) == good
    assert json.loads(marker.read_text())["per_class"] == 2


def test_q1_a_damaged_nets_stamp_is_refused_naming_it_and_the_fix(q1_first_run):
    repo, first = q1_first_run
    stamp = first / "baseline/nets.sha256"
    real = stamp.read_text()
    stamp.write_bytes(b"3f\x00\xff")  # garbage: which net the snapshots are of cannot be told
    before = files_of(first / "baseline")
    try:
        with pytest.raises(experiment.RunExists) as e:
            experiment.run("fashion-mnist", per_class=2, seed=0, variants=["baseline"], max_iter=4, repo=repo,
                           progress=False)
        assert "\n" not in str(e.value)
        assert str(e.value).startswith(f"{stamp} is damaged") and "Fix: rerun with --fresh" in str(e.value)
        assert files_of(first / "baseline") == before, "a refused run changed the run folder"
    finally:
        stamp.write_text(real)


def test_a_damaged_lmdb_manifest_is_refused_in_one_line_and_the_records_still_count(tmp_path, small_lmdb):
    lmdb = tmp_path / "test_lmdb"
    shutil.copytree(small_lmdb / "test_lmdb", lmdb)
    counts = lmdb_io.label_counts(lmdb)
    (lmdb / "manifest.json").write_text(CUT)
    with pytest.raises(lmdb_io.LmdbError) as e:
        lmdb_io.check(lmdb, num_classes=10, fix="run `make data` again")
    assert str(e.value) == (f"{lmdb / 'manifest.json'} is damaged (not valid JSON: Unterminated string starting at: "
                            "line 1 column 13 (char 12)). Fix: run `make data` again")
    assert lmdb_io.label_counts(lmdb) == counts, "the label check needs the records, not the manifest"
    assert (lmdb / "manifest.json").read_text() == CUT, "a refused file was changed"


RAISING_LAYER = '''
import caffe


class Raises(caffe.Layer):
    def setup(self, bottom, top):
        raise ValueError("set-up refused")
'''


def test_net_shapes_builds_nets_in_one_child_that_survives_exceptions_and_is_replaced_after_an_abort(
        tmp_path, monkeypatch):
    """The snapshot checks' net shapes come from one long-lived child per run (not a process per net): its shapes
    are Caffe's own; a net whose set-up raises in Python gets None and the same child goes on; a CHECK failure,
    which aborts the child, gets None too, and the next net a new child."""
    from caffe.proto import caffe_pb2

    (tmp_path / "raising_layer.py").write_text(RAISING_LAYER)

    def solver_for(name, build):
        n = caffe.NetSpec()
        n.data = L.Input(shape=dict(dim=[2, 3, 8, 8]))
        n.top = build(n.data)
        write_prototxt(tmp_path / f"{name}.prototxt", n.to_proto())
        return caffe_pb2.SolverParameter(net=f"{name}.prototxt")

    conv = solver_for("conv", lambda d: L.Convolution(d, num_output=4, kernel_size=3))
    fc = solver_for("fc", lambda d: L.InnerProduct(d, num_output=5))
    raising = solver_for("raising", lambda d: L.Python(d, module="raising_layer", layer="Raises"))
    aborting = solver_for("aborting", lambda d: L.Convolution(d, num_output=0, kernel_size=3))
    ask = dict(cwd=tmp_path, pythonpath=(tmp_path,))

    assert preflight.net_shapes(conv, **ask) == {"top": [(4, 3, 3, 3), (4,)]}
    worker = preflight._workers[(str(tmp_path),)]
    assert preflight.net_shapes(fc, **ask) == {"top": [(5, 192), (5,)]}
    assert preflight.net_shapes(raising, **ask) is None
    assert preflight._workers[(str(tmp_path),)] is worker and worker.poll() is None, "one child, still running"
    assert preflight.net_shapes(aborting, **ask) is None
    assert worker.poll() is not None, "Caffe's CHECK failure aborted the child"
    again = solver_for("again", lambda d: L.Convolution(d, num_output=2, kernel_size=1))
    assert preflight.net_shapes(again, **ask) == {"top": [(2, 3, 1, 1), (2,)]}
    assert preflight._workers[(str(tmp_path),)] is not worker
