"""Issue #21, "nothing corrupt trusted, every failure one clear line": real faults in real files and processes.

State files cut short, of the wrong JSON type or without their fields; a label changed inside a real data.mdb;
a mean "file" that is a folder; a log that is a folder; predict's outputs into a folder, a read-only disk and a
full disk (small tmpfs mounts: skipped, with the reason, where mounting is not allowed); Caffe's own failure when
its snapshot does not fit. Each ends in the right result or one line naming the file and the fix.
"""

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import time

import caffe
import lmdb
import numpy as np
import pytest
from caffe import layers as L
from conftest import REPO, write_prototxt
from PIL import Image
from test_faults import RUNNER, error_line, tiny_net, tiny_solver

import demo
from q1_dropout_augment import experiment
from tools import caffe_runner, lmdb_io
from tools.cli import caffe_disk_full, os_error_line
from tools.fileio import DamagedFile, read_json
from tools.parse_log import parse_lines

CUT = '{"weights": "snap'  # a state file cut short mid-write, as the issue reproduced it
ENV = {**os.environ, "GLOG_minloglevel": "2"}


@contextlib.contextmanager
def small_disk(path, size="1m", options=""):
    """A tmpfs of `size` mounted at `path` for the block: a real disk that fills up (or is read-only)."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(path)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mount.stderr.strip() or 'mount failed'}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk, leave=0):
    """Fill `disk` with a file of zeros until only `leave` bytes (about) are free."""
    with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):
        while shutil.disk_usage(disk).free > leave:
            f.write(b"\0" * min(1 << 16, max(4096, shutil.disk_usage(disk).free - leave)))
            f.flush()


# ---- JSON state files: the wrong type, missing fields -------------------------------------------------------


@pytest.mark.parametrize("text, problem", [
    (CUT, "not valid JSON: Unterminated string"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"weights": "snap_iter_4.caffemodel"}', "no 'size' field"),
    ('{"weights": "w", "size": 1, "mtime_ns": 2, "images": 3, "accuracy": "high", "loss": 0.5}',
     "'accuracy' is \"high\", not a number"),
    ('{"weights": "w", "size": 1, "mtime_ns": 2, "images": 3, "accuracy": true, "loss": 0.5}',
     "'accuracy' is true, not a number"),
])
def test_a_val_full_json_of_the_wrong_shape_is_moved_aside(tmp_path, text, problem):
    cache = tmp_path / "val_full.json"
    cache.write_text(text)
    said = []
    assert experiment.read_val_full(cache, said.append) is None
    assert said == [f"{cache} was damaged ({problem}" + said[0].split(problem, 1)[1]]
    assert said[0].endswith("moved aside to val_full.json.broken; evaluating the final weights again")
    assert (tmp_path / "val_full.json.broken").read_text() == text and not cache.exists()
    # a file that cannot be rebuilt is refused, left alone, in one line
    cache.write_text(text)
    with pytest.raises(DamagedFile) as e:
        read_json(cache, fix="restore it", expect=experiment.VAL_FULL)
    assert str(e.value).startswith(f"{cache} is damaged ({problem}") and str(e.value).endswith(". Fix: restore it")
    assert "\n" not in str(e.value) and cache.read_text() == text


def test_q1_state_files_of_the_wrong_shape_are_made_again(q1_first_run, capsys):
    repo, out = q1_first_run
    cache, marker = out / "baseline/val_full.json", repo / "data/q1/fashion-mnist/prepared.json"
    good_cache, good_marker = json.loads(cache.read_text()), json.loads(marker.read_text())
    cache.write_text(json.dumps({k: v for k, v in good_cache.items() if k != "loss"}))  # a key missing
    marker.write_text(json.dumps({**good_marker, "subset_count": "20"}))  # a count that is a string
    capsys.readouterr()
    assert experiment.run("fashion-mnist", per_class=2, seed=0, variants=["baseline"], max_iter=4, repo=repo,
                          progress=False) == out
    said = capsys.readouterr().out
    assert f"[q1] {marker} was damaged ('subset_count' is \"20\", not a whole number): moved aside to " \
           "prepared.json.broken; preparing fashion-mnist again" in said
    assert f"[q1] {cache} was damaged (no 'loss' field): moved aside to val_full.json.broken; evaluating the " \
           "final weights again" in said
    assert "already trained (4 iterations)" in said, "a damaged cache made it train again"
    assert json.loads(cache.read_text()) == good_cache and json.loads(marker.read_text()) == good_marker


def test_demo_reads_val_full_and_timings_through_their_checks(tmp_path, capsys):
    out = tmp_path / "results/q1/fashion-mnist"
    good = {"weights": "snap_iter_4.caffemodel", "size": 1, "mtime_ns": 2, "images": 3, "accuracy": 0.5, "loss": 1.0}
    for v in demo.Q1_VARIANTS:
        (out / v).mkdir(parents=True)
        (out / v / "val_full.json").write_text(json.dumps(good))
    (out / "dropout/val_full.json").write_text(CUT)  # demo.py read it with a bare json.loads: a traceback
    assert demo.q1_results(tmp_path) is None
    said = capsys.readouterr().out
    assert said.startswith(f"[demo] {out / 'dropout/val_full.json'} was damaged (not valid JSON") and \
        "the Q1 stage (`make demo`, or demo.py --only q1) evaluates the final weights again" in said
    assert (out / "dropout/val_full.json.broken").read_text() == CUT

    timings = tmp_path / "timings.json"
    timings.write_text('{"stages": {"Q1 (all variants)": {"first": "fast"}}}')
    assert demo.load_timings(timings) == {"stages": {}, "runs": {}}
    assert "has no number of seconds 'first'" in capsys.readouterr().out and not timings.exists()
    timings.write_text('{"Q1 (all variants)": {"first": 12.5}}')  # an older demo's file: read as such
    assert demo.load_timings(timings)["stages"] == {"Q1 (all variants)": {"first": 12.5}}


def test_q2_and_demo_state_files_of_the_wrong_shape(tmp_path):
    from q2_wikiart_finetune import experiment as q2_experiment
    from q2_wikiart_finetune import transfer_demo

    timings = tmp_path / "timings.json"
    timings.write_text('{"finetune": 12.5, "scratch": "slow"}')
    said = []
    assert read_json(timings, log=said.append, expect=q2_experiment.timings_problem) is None
    assert said == [f'{timings} was damaged ("scratch" is "slow", not a number of seconds): moved aside to '
                    "timings.json.broken; making it again"]
    marker = tmp_path / "prepared.json"
    marker.write_text('{"sizes": {}, "mean_value": [1, 1, 1], "pretrain_train": 3000}')
    assert read_json(marker, log=said.append, expect=transfer_demo.PREPARED) is None
    assert "(no 'pretrain_val' field)" in said[-1]
    card = tmp_path / transfer_demo.CARD
    card.parent.mkdir(parents=True)
    card.write_text('{"val_accuracy": null}')
    with pytest.raises(DamagedFile, match=r"model\.json is damaged \('val_accuracy' is null, not a number\)\. "
                                          r"Fix: run `make demo` again"):
        transfer_demo.write_results({}, 0.5, {}, tmp_path)


@pytest.mark.parametrize("manifest, problem", [
    ("[]", "a JSON list, not an object"),
    ('{"entries": 200, "labels": {}, "data_size": 1, "sha256": "x"}', "no 'source' field"),
    ('{"entries": "200", "labels": {}, "data_size": 1, "sha256": "x", "source": {}}', "'entries' is \"200\""),
    ('{"entries": 200, "labels": {"cat": 3}, "data_size": 1, "sha256": "x", "source": {}}',
     "'labels' maps \"cat\" to 3"),
])
def test_an_lmdb_manifest_of_the_wrong_shape_is_refused_in_one_line(tmp_path, small_lmdb, manifest, problem):
    db = tmp_path / "test_lmdb"
    shutil.copytree(small_lmdb / "test_lmdb", db)
    (db / "manifest.json").write_text(manifest)
    with pytest.raises(lmdb_io.LmdbError) as e:
        lmdb_io.check(db, num_classes=10, fix="run `make data` again")
    assert str(e.value).startswith(f"{db / 'manifest.json'} is damaged ({problem}")
    assert str(e.value).endswith("Fix: run `make data` again") and "\n" not in str(e.value)
    assert lmdb_io.label_counts(db) == {k: 20 for k in range(10)}, "the labels come from the records"


# ---- a label changed inside data.mdb --------------------------------------------------------------------------


def flip_label(db, key=b"00000017", label=99) -> int:
    """Set record `key`'s label to `label` in data.mdb itself, in place: the file's size (and so its manifest's
    data_size) stays the same. Returns the label it had."""
    env = lmdb.open(str(db), readonly=True, lock=False)
    with env.begin() as txn:
        value = txn.get(key)
    env.close()
    datum = caffe.proto.caffe_pb2.Datum()
    datum.ParseFromString(value)
    assert value.endswith(bytes([0x28, datum.label])), "a raw Datum ends with its label (field 5, a varint)"
    content = (db / "data.mdb").read_bytes()
    at = content.find(value)
    assert at >= 0 and content.find(value, at + 1) < 0
    with open(db / "data.mdb", "r+b") as f:
        f.seek(at + len(value) - 1)
        f.write(bytes([label]))
    return datum.label


def test_a_label_changed_inside_data_mdb_is_refused_before_caffe_starts(tmp_path, small_lmdb):
    db = tmp_path / "train_lmdb"
    shutil.copytree(small_lmdb / "train_lmdb", db)
    size = (db / "data.mdb").stat().st_size
    was = flip_label(db)
    assert (db / "data.mdb").stat().st_size == size, "the manifest's size check alone would trust it"
    counts = lmdb_io.label_counts(db)
    assert counts[99] == 1 and counts[was] == 59
    with pytest.raises(lmdb_io.LmdbError) as e:
        lmdb_io.check_labels(db, 10, fix="prepare the data again")
    assert str(e.value) == (f"{db / 'data.mdb'} holds 1 record(s) with label 99, outside 0..9 (10 classes). "
                            "Fix: prepare the data again")
    with pytest.raises(lmdb_io.LmdbError, match="data.mdb's SHA-256 differs from its manifest's"):
        lmdb_io.check(db)
    # the runner's pre-flight check (label_counts) refuses it in one line, before Caffe starts
    net = tiny_net(tmp_path / "net.prototxt", db, small_lmdb / "test_lmdb")
    solver = tiny_solver(tmp_path, net, max_iter=10, snapshot=0, test_interval=10)
    proc = subprocess.run([*RUNNER, str(solver), "--log", str(tmp_path / "train.log")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    line = error_line(proc.stderr)
    assert proc.returncode == 1 and line.startswith(f"error: {db} holds 1 record(s) with label 99, outside 0..9"), \
        proc.stderr
    assert not (tmp_path / "train.log").exists(), "refused before Caffe started"


def test_a_record_that_is_not_a_datum_is_named(tmp_path):
    db = tmp_path / "x_lmdb"
    lmdb_io.write_arrays(db, np.zeros((3, 1, 2, 2), np.uint8), [0, 1, 2])
    env = lmdb.open(str(db))
    with env.begin(write=True) as txn:
        txn.put(b"00000001", b"\xff\xff\xff")
    env.close()
    with pytest.raises(lmdb_io.LmdbError, match=rf"^{db / 'data.mdb'}: record 00000001 is not a Caffe Datum"):
        lmdb_io.record_labels(db)


def test_reading_the_labels_of_50000_records_takes_well_under_a_second_or_two(tmp_path):
    images = np.random.RandomState(0).randint(0, 255, (50_000, 3, 32, 32), np.uint8)  # Q1's CIFAR-10 train_lmdb
    labels = np.arange(50_000) % 10
    lmdb_io.write_arrays(tmp_path / "train_lmdb", images, labels)
    start = time.perf_counter()
    counts = lmdb_io.record_labels(tmp_path / "train_lmdb")
    took = time.perf_counter() - start
    print(f"record_labels: 50,000 records in {took:.2f} s")
    assert counts == {k: 5000 for k in range(10)}
    assert took < 5, f"{took:.1f} s: too slow to run before every training"


# ---- smaller ones ---------------------------------------------------------------------------------------------


def test_a_mean_file_that_is_a_folder_is_called_a_folder(tmp_path, small_lmdb):
    folder = tmp_path / "mean.binaryproto"
    folder.mkdir()
    with pytest.raises(ValueError, match=rf"^mean file {folder} is a folder, not a file. Fix: give the mean file"):
        lmdb_io.read_mean(folder)
    net = tiny_net(tmp_path / "net.prototxt", small_lmdb / "train_lmdb", small_lmdb / "test_lmdb", mean_file=folder)
    solver = tiny_solver(tmp_path, net, max_iter=10, snapshot=0, test_interval=10)
    with pytest.raises(caffe_runner.InputError, match=rf"^mean file {folder} is a folder.*\(layer 'data' of "):
        caffe_runner.train(solver, tmp_path / "train.log", progress=False)


def test_parse_log_of_a_folder_is_one_line(tmp_path):
    for arg, message in ((tmp_path, f"error: {tmp_path} is a folder. Fix: give the log file"),
                         (tmp_path / "none.log", f"error: no such log: {tmp_path / 'none.log'}. Fix: ")):
        p = subprocess.run([sys.executable, "-m", "tools.parse_log", str(arg)], cwd=REPO, capture_output=True,
                           text=True)
        assert p.returncode == 1 and p.stderr.startswith(message) and len(p.stderr.splitlines()) == 1, p.stderr


def glog(second, text):
    return f"I1128 10:{second // 60:02d}:{second % 60:02d}.000000  1 solver.cpp:1] {text}"


def test_the_wall_time_leaves_out_a_run_thrown_away_after_its_snapshot_broke():
    """Run 1 trains 0..20 in 6 s, but its snapshot is found broken, so run 2 trains 0..20 again in 6 s: the
    time is run 2's, not 12 s; a resume from iteration 10 counts run 1 up to 10, then run 2's own time."""
    def run(t0, start=0):
        rows = [glog(t0, f"Iteration {start}, Testing net (#0)"), glog(t0, "    Test net output #0: loss = 2.0"),
                glog(t0 + 1, f"Iteration {start} (0 iter/s), loss = 2.0"),
                glog(t0 + 1, "    Train net output #0: loss = 2.0 (* 1 = 2.0 loss)")]
        if start < 10:
            rows += [glog(t0 + 2, "Iteration 10 (5 iter/s), loss = 1.0"),
                     glog(t0 + 2, "    Train net output #0: loss = 1.0 (* 1 = 1.0 loss)")]
        return [*rows, glog(t0 + 5, "Iteration 20, Testing net (#0)"),
                glog(t0 + 5, "    Test net output #0: loss = 0.5"),
                glog(t0 + 6, "Iteration 20 (5 iter/s), loss = 0.6"),
                glog(t0 + 6, "    Train net output #0: loss = 0.6 (* 1 = 0.6 loss)")]

    first = ["# toolkit: caffe train", glog(0, "Solving net"), *run(0)]
    retrained = parse_lines([*first, "# toolkit: caffe train", glog(100, "Solving net"), *run(100)])
    assert experiment.train_seconds(retrained) == 6.0
    assert [r["NumIters"] for r in retrained.train] == [0, 10, 20]
    resumed = parse_lines([*first, "# toolkit: caffe train -snapshot=snap_iter_10.solverstate", *run(200, start=10)])
    # run 1 reached iteration 10 at 2 s; run 2's own time follows (6 s, from its test at iteration 10)
    assert [(r["NumIters"], r["Seconds"]) for r in resumed.train] == [(0, 1.0), (10, 3.0), (20, 8.0)]
    assert experiment.train_seconds(parse_lines(first)) == 6.0


# ---- predict's outputs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def five_class_net(tmp_path_factory, fashion):
    """A 5-class deploy net on 8x8 inputs, its weights, and a list of 3 labelled images."""
    root = tmp_path_factory.mktemp("predict")
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.fc = L.InnerProduct(n.data, num_output=5, weight_filler=dict(type="xavier"))
    n.prob = L.Softmax(n.fc)
    deploy = write_prototxt(root / "deploy.prototxt", n.to_proto())
    weights = root / "five.caffemodel"
    caffe.Net(str(deploy), caffe.TEST).save(str(weights))
    images = root / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(fashion.test_images[i, 0]).convert("RGB").resize((8, 8)).save(images / f"{i}.png")
    listing = root / "val.txt"
    listing.write_text("0.png 4\n1.png 3\n2.png 0\n")
    return deploy, weights, images, listing


@pytest.mark.parametrize("bad", [7, -1])
def test_predict_refuses_labels_outside_the_nets_classes_before_writing_anything(tmp_path, five_class_net, bad):
    deploy, weights, images, _ = five_class_net
    listing = tmp_path / "val.txt"
    listing.write_text(f"0.png 4\n\n1.png {bad}\n2.png 0\n")  # line 3: a blank line does not shift the count
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "q2_wikiart_finetune.predict", "--weights", str(weights), "--deploy", str(deploy),
           "--images", str(listing), "--root", str(images), "--out", str(out / "s.csv"), "--mean-value", "0", "0", "0",
           "--new-size", "8", "--crop", "8"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "GLOG_minloglevel": "2"})
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines() == [
        f"error: {listing}:3: label {bad} is outside 0..4 ({weights} has 5 classes); nothing was written. "
        "Fix: labels are class indices counted from 0: correct the list, or give the weights and deploy of a net "
        "with that many classes"]
    assert not out.exists(), "an output was written before the labels were checked"
    listing.write_text("0.png 4\n1.png 3\n2.png 0\n")  # the same run with good labels writes its outputs
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "GLOG_minloglevel": "2"})
    assert p.returncode == 0, p.stderr
    assert {f.name for f in out.iterdir()} == {"s.csv", "s_accuracy.md", "s_confusion.png"}


def predict_cmd(five_class_net, out):
    deploy, weights, images, listing = five_class_net
    return [sys.executable, "-m", "q2_wikiart_finetune.predict", "--weights", str(weights), "--deploy", str(deploy),
            "--images", str(listing), "--root", str(images), "--out", str(out), "--mean-value", "0", "0", "0",
            "--new-size", "8", "--crop", "8"]


def predict_run(five_class_net, out):
    p = subprocess.run(predict_cmd(five_class_net, out), cwd=REPO, capture_output=True, text=True, env=ENV,
                       timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def test_predict_out_a_folder_is_one_line_before_any_compute(tmp_path, five_class_net):
    folder = tmp_path / "results"
    folder.mkdir()
    p = predict_run(five_class_net, folder)
    assert p.returncode == 1 and p.stderr.splitlines() == [
        f"error: --out {folder} is a folder: give the submission's file name, e.g. {folder / 'submission.csv'}"]
    assert list(folder.iterdir()) == [] and "predict" not in p.stdout


def test_predict_into_a_read_only_folder_is_one_line(tmp_path, five_class_net):
    with small_disk(tmp_path / "ro", options=",ro") as disk:
        p = predict_run(five_class_net, disk / "s.csv")
        assert p.returncode == 1 and p.stderr.splitlines() == [
            f"error: {disk / 's.csv'}: Read-only file system (errno 30). Fix: make the folder writable (or work in "
            "a clone you own) and run the same command again"]


def test_predict_on_a_full_disk_says_so_with_the_free_space_and_leaves_nothing_half_written(tmp_path,
                                                                                         five_class_net):
    with small_disk(tmp_path / "disk", size="1m") as disk:
        fill(disk)
        p = predict_run(five_class_net, disk / "s.csv")
        line = error_line(p.stderr)  # after the progress bar's line
        assert p.returncode == 1 and p.stderr.count("error:") == 1, p.stderr
        assert line.startswith(f"error: {disk / 's.csv'}: No space left on device (errno 28): the disk is full "
                                   f"(0 bytes free of 1.0 MB on the disk that holds {disk}). Fix: free space there "
                                   f"(df -h {disk}) and run the same command again"), p.stderr
        assert [f.name for f in disk.iterdir()] == ["filler"], "a half-written output was left"
        (disk / "filler").unlink()  # space freed: the same command writes every output
        p = predict_run(five_class_net, disk / "s.csv")
        assert p.returncode == 0, p.stderr
        assert sorted(f.name for f in disk.iterdir()) == ["s.csv", "s_accuracy.md", "s_confusion.png"]


def test_an_lmdb_written_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, fashion):
    with small_disk(tmp_path / "disk", size="2m") as disk:
        with pytest.raises(OSError) as e:
            lmdb_io.write_arrays(disk / "train_lmdb", fashion.train_images[:5000], fashion.train_labels[:5000])
        line = os_error_line(e.value)
        assert line.startswith(f"{disk / 'train_lmdb'}: No space left on device") and "the disk is full (" in line
        assert list(disk.iterdir()) == [], "a half-written LMDB was left"


def test_caffes_failure_to_write_a_snapshot_on_a_full_disk_maps_to_the_disk_full_line(tmp_path, small_lmdb):
    """Caffe ends with `io.cpp:72] Check failed: proto.SerializeToOstream(&output)`: caffe_disk_full turns that
    into the one line (the runner's CaffeError is to call it); the half-written snapshot is never trusted."""
    net = tiny_net(tmp_path / "net.prototxt", small_lmdb / "train_lmdb", small_lmdb / "test_lmdb")
    with small_disk(tmp_path / "disk", size="2m") as disk:
        solver = tiny_solver(disk, net, max_iter=200, snapshot=50, test_interval=100)
        fill(disk, leave=60_000)  # room for the log's first lines, not for a snapshot (47 kB + its state)
        with pytest.raises(OSError) as e:  # the runner says what Caffe's fatal line meant: one line, the fix
            caffe_runner.train(solver, tmp_path / "train.log", progress=False)
        assert e.value.errno == errno.ENOSPC and "SerializeToOstream" in (tmp_path / "train.log").read_text()
        said = os_error_line(e.value)
        assert said.startswith(f"{disk / 'snap'}: caffe train could not write there (log {tmp_path / 'train.log'}) "
                               "(errno 28): the disk is full (") and f"free of 2.1 MB on the disk that holds {disk})" \
            f". Fix: free space there (df -h {disk})" in said and "\n" not in said
        fatal = next(ln for ln in (tmp_path / "train.log").read_text().splitlines() if "SerializeToOstream" in ln)
        line = caffe_disk_full(fatal, disk / "snap")
        assert line.startswith(f"{disk / 'snap'}: the disk is full (") and f"free of 2.1 MB on the disk that " \
            f"holds {disk}). Fix: free space there (df -h {disk})" in line
        assert caffe_disk_full("F1128 solver.cpp:1] Check failed: lr > 0", disk) is None, "other failures are not"
        (disk / "filler").unlink()
        assert caffe_disk_full(fatal, disk) is None, "a disk with room is not called full"
        result = caffe_runner.train(solver, tmp_path / "train.log", progress=False)
        assert result.final_iter == 200 and result.start_iter == 0, "the half-written snapshot was not resumed"
        assert sorted(f.name for f in disk.glob("*.broken")) == ["snap_iter_50.caffemodel.broken",
                                                                 "snap_iter_50.solverstate.broken"]
