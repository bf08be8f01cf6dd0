"""tools/: the runner, log parsing, plots, solvers, LMDBs and mean files, drawing, on real Caffe runs."""

import os
import shutil
import signal
import subprocess
import sys
import time

import caffe
import numpy as np
import pytest
from caffe import layers as L
from caffe import params as P
from conftest import REPO, write_prototxt

from tools import caffe_runner, lmdb_io, paths, snapshots
from tools.parse_log import parse_lines, parse_log, write_csvs
from tools.plot_log import plot_runs
from tools.solver import make_solver, read_solver, write_solver


def two_test_net(train_src, val_src, path):
    """Train on one LMDB; two TEST nets (stages 'val' and 'train_subset'), each with accuracy and loss."""
    tp = dict(scale=1 / 255)
    n = caffe.NetSpec()
    n.data, n.label = L.Data(source=str(train_src), backend=P.Data.LMDB, batch_size=32, ntop=2,
                             transform_param=tp, include=dict(phase=caffe.TRAIN))
    n.conv = L.Convolution(n.data, num_output=8, kernel_size=5, stride=2, weight_filler=dict(type="xavier"))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.fc = L.InnerProduct(n.relu, num_output=10, weight_filler=dict(type="xavier"))
    n.accuracy = L.Accuracy(n.fc, n.label, include=dict(phase=caffe.TEST))
    n.loss = L.SoftmaxWithLoss(n.fc, n.label)
    net = n.to_proto()
    for i, (stage, src) in enumerate((("val", val_src), ("train_subset", train_src))):
        t = caffe.NetSpec()
        t.data, t.label = L.Data(source=str(src), backend=P.Data.LMDB, batch_size=50, ntop=2, transform_param=tp,
                                 include=dict(phase=caffe.TEST, stage=stage))
        net.layer.insert(1 + i, t.to_proto().layer[0])
    return write_prototxt(path, net)


def solver_for(tmp_path, net, max_iter, snapshot=0, test_interval=10):
    return write_solver(make_solver(
        net=str(net), base_lr=0.01, momentum=0.9, lr_policy="step", gamma=0.5, stepsize=30, max_iter=max_iter,
        display=5, test_iter=[2, 2], test_state=[{"stage": ["val"]}, {"stage": ["train_subset"]}],
        test_interval=test_interval, snapshot=snapshot, snapshot_prefix=str(tmp_path / "snap"), random_seed=7,
        solver_mode="CPU"), tmp_path / "solver.prototxt")


@pytest.fixture
def two_test_solver(tmp_path, small_lmdb):
    net = two_test_net(small_lmdb / "train_lmdb", small_lmdb / "test_lmdb", tmp_path / "net.prototxt")
    return solver_for(tmp_path, net, max_iter=60)


@pytest.mark.slow
def test_parse_log_two_test_nets_and_outputs(tmp_path, two_test_solver):
    result = caffe_runner.train(two_test_solver, tmp_path / "train.log", progress=False)
    assert result.final_iter == 60 and not result.already_done
    log = parse_log(tmp_path / "train.log")
    assert [r["NumIters"] for r in log.train] == list(range(0, 60, 5))
    assert len(log.tests) == 2
    for table in log.tests:
        assert [r["NumIters"] for r in table] == [0, 10, 20, 30, 40, 50, 60]
        assert all({"accuracy", "loss", "LearningRate", "Seconds"} <= r.keys() for r in table)
    # step policy: lr halves every 30 iterations, and the table says so at the right iterations
    lr = {r["NumIters"]: r["LearningRate"] for r in log.train}
    assert lr[25] == pytest.approx(0.01) and lr[30] == pytest.approx(0.005) and lr[55] == pytest.approx(0.005)
    secs = [r["Seconds"] for r in log.train]
    assert secs == sorted(secs) and secs[-1] > 0
    assert log.tests[1][-1]["accuracy"] > log.tests[1][0]["accuracy"]  # it learned
    files = write_csvs(log, tmp_path, "train.log")
    assert [f.name for f in files] == ["train.log.train", "train.log.test", "train.log.test1"]
    header = files[1].read_text().splitlines()[0]
    assert header == "NumIters,Seconds,LearningRate,accuracy,loss"


GLOG_SAMPLE = """\
I1231 23:59:59.500000  1 solver.cpp:218] Iteration 0 (0 iter/s, 0.1s/10 iters), loss = 2.5
I1231 23:59:59.500000  1 solver.cpp:237]     Train net output #0: loss = 2.5 (* 1 = 2.5 loss)
I1231 23:59:59.500000  1 sgd_solver.cpp:105] Iteration 0, lr = 0.1
I0101 00:00:01.000000  1 solver.cpp:330] Iteration 10, Testing net (#0)
I0101 00:00:01.000000  1 solver.cpp:397]     Test net output #0: accuracy = 0.25
I0101 00:00:01.500000  1 solver.cpp:218] Iteration 10 (9 iter/s, 1s/10 iters), loss = 1.5
I0101 00:00:01.500000  1 solver.cpp:237]     Train net output #0: loss = 1.5 (* 1 = 1.5 loss)
I0101 00:00:01.500000  1 sgd_solver.cpp:105] Iteration 10, lr = 0.01
"""


def test_parse_log_known_answer_across_new_year():
    log = parse_lines(GLOG_SAMPLE.splitlines())
    assert log.train == [
        {"NumIters": 0, "Seconds": 0.0, "LearningRate": 0.1, "loss": 2.5},
        {"NumIters": 10, "Seconds": 2.0, "LearningRate": 0.01, "loss": 1.5},
    ]
    assert log.tests == [[{"NumIters": 10, "Seconds": 1.5, "LearningRate": 0.01, "accuracy": 0.25}]]


@pytest.mark.slow
def test_interrupted_training_resumes_to_max_iter(tmp_path, small_lmdb):
    net = two_test_net(small_lmdb / "train_lmdb", small_lmdb / "test_lmdb", tmp_path / "net.prototxt")
    max_iter = 3000  # ~2 s of training: SIGINT arrives long before the end
    solver = solver_for(tmp_path, net, max_iter=max_iter, test_interval=100)
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "tools.caffe_runner", str(solver), "--log", str(log)]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and "Iteration 40 " in log.read_text()):
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)  # what Ctrl-C does to the runner
    out, _ = first.communicate(timeout=60)
    assert first.returncode != 0 and "run the same command again to resume" in out, out
    snaps = list(tmp_path.glob("snap_iter_*.solverstate"))
    assert len(snaps) == 1, "Caffe snapshots when SIGINT stops it"
    stopped_at = snapshots.latest_snapshot(solver)[1]
    assert 40 <= stopped_at < max_iter

    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"iterations {stopped_at}..{max_iter}" in second.stdout
    text = log.read_text()
    assert "Resuming from" in text
    table = parse_log(log).train
    iters = [r["NumIters"] for r in table]
    assert iters == list(range(0, max_iter, 5)), "one row per display, no gaps or repeats across the resume"
    assert snapshots.latest_snapshot(solver)[1] == max_iter
    # a third call finds training complete and runs nothing
    again = caffe_runner.train(solver, log, progress=False)
    assert again.already_done and again.final_iter == max_iter


@pytest.mark.slow
def test_caffe_test_scores_a_snapshot_per_stage(tmp_path, two_test_solver):
    caffe_runner.train(two_test_solver, tmp_path / "train.log", progress=False)
    weights = tmp_path / "snap_iter_60.caffemodel"
    val = caffe_runner.test(tmp_path / "net.prototxt", weights, tmp_path / "test.log", iterations=4, stages=["val"])
    assert set(val) == {"accuracy", "loss"} and 0 <= val["accuracy"] <= 1
    logged = parse_log(tmp_path / "train.log").test(0)[-1]  # the same 2 x 50 validation images
    val2 = caffe_runner.test(tmp_path / "net.prototxt", weights, tmp_path / "test2.log", iterations=2, stages=["val"])
    assert val2["accuracy"] == pytest.approx(logged["accuracy"], abs=1e-4)


def test_gpu_on_cpu_build_fails_before_caffe_starts(tmp_path, two_test_solver):
    if paths.is_gpu_build():
        pytest.skip("this is a GPU build")
    with pytest.raises(caffe_runner.CaffeError, match="CPU-only Caffe build.*CAFFE_GPU=1"):
        caffe_runner.train(two_test_solver, tmp_path / "gpu.log", gpu="0", progress=False)
    assert not (tmp_path / "gpu.log").exists()


def test_solver_roundtrip(tmp_path):
    s = make_solver(net="a.prototxt", base_lr=0.001, lr_policy="step", stepsize=100, gamma=0.1, max_iter=500,
                    test_iter=[10, 5], test_state=[{"stage": ["val"]}, {"stage": ["train_subset"]}],
                    snapshot_prefix="out/snap", solver_mode="CPU", random_seed=3)
    path = write_solver(s, tmp_path / "solver.prototxt")
    back = read_solver(path)
    assert back == s
    assert list(back.test_iter) == [10, 5] and back.test_state[1].stage == ["train_subset"]
    assert 'stage: "val"' in path.read_text()
    (tmp_path / "bad.prototxt").write_text("base_lr: 0.1\nmax_itr: 5\n")
    with pytest.raises(ValueError, match="bad.prototxt.*max_itr"):
        read_solver(tmp_path / "bad.prototxt")


def test_lmdb_roundtrip_order_and_shuffle(tmp_path, rng):
    images = rng.randint(0, 256, size=(30, 3, 5, 7)).astype(np.uint8)
    labels = np.arange(30) % 10
    lmdb_io.write_arrays(tmp_path / "plain", images, labels)
    back = list(lmdb_io.read_lmdb(tmp_path / "plain"))
    assert len(back) == 30 and lmdb_io.count(tmp_path / "plain") == 30
    for (img, lab), want, want_label in zip(back, images, labels, strict=True):
        np.testing.assert_array_equal(img, want)
        assert lab == want_label
    lmdb_io.write_arrays(tmp_path / "shuffled", images, labels, shuffle_seed=5)
    order = np.random.RandomState(5).permutation(30)
    again = list(lmdb_io.read_lmdb(tmp_path / "shuffled"))
    np.testing.assert_array_equal(np.stack([a for a, _ in again]), images[order])


def test_lmdb_map_grows(tmp_path, monkeypatch, rng):
    monkeypatch.setattr(lmdb_io, "INITIAL_MAP_SIZE", 1 << 16)  # 64 KiB: far too small for 1.5 MB
    images = rng.randint(0, 256, size=(500, 3, 32, 32)).astype(np.uint8)
    lmdb_io.write_arrays(tmp_path / "big", images, np.zeros(500, int))
    assert lmdb_io.count(tmp_path / "big") == 500


def test_encoded_lmdb_read_back_and_by_caffe(tmp_path):
    from PIL import Image

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    lmdb_io.write_encoded(tmp_path / "enc", [tmp_path / "red.png"] * 4, [3] * 4)
    img, label = next(lmdb_io.read_lmdb(tmp_path / "enc"))
    assert label == 3 and img.shape == (3, 8, 8) and img[2].min() == 200 and img[0].max() == 0  # BGR
    n = caffe.NetSpec()
    n.data, n.label = L.Data(source=str(tmp_path / "enc"), backend=P.Data.LMDB, batch_size=2, ntop=2)
    net = caffe.Net(str(write_prototxt(tmp_path / "net.prototxt", n.to_proto())), caffe.TEST)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data[0], img)


def test_mean_binaryproto_and_npy_agree_with_numpy(tmp_path, rng):
    images = rng.randint(0, 256, size=(50, 3, 6, 4)).astype(np.uint8)
    lmdb_io.write_arrays(tmp_path / "db", images, np.zeros(50, int))
    mean = lmdb_io.compute_mean(tmp_path / "db", tmp_path / "mean.binaryproto")
    expected = images.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(mean, expected, rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "mean.npy"), expected, rtol=1e-5)
    np.testing.assert_allclose(lmdb_io.read_binaryproto(tmp_path / "mean.binaryproto"), expected, rtol=1e-5)


def test_mean_of_a_missing_lmdb_is_a_clear_error(tmp_path):
    with pytest.raises(lmdb_io.LmdbError, match="no LMDB at .*nowhere"):
        lmdb_io.compute_mean(tmp_path / "nowhere", tmp_path / "m.binaryproto")
    assert not (tmp_path / "m.binaryproto").exists()
    (tmp_path / "empty").mkdir()  # an LMDB folder without records: compute_image_mean's own error
    lmdb_io.write_arrays(tmp_path / "empty", np.zeros((0, 1, 2, 2), np.uint8), [])
    with pytest.raises(RuntimeError, match="compute_image_mean failed on .*empty"):
        lmdb_io.compute_mean(tmp_path / "empty", tmp_path / "m.binaryproto")
    assert not (tmp_path / "m.binaryproto").exists() and not list(tmp_path.glob(".m.binaryproto*"))


@pytest.mark.slow
def test_plot_runs_png_and_csv(tmp_path, two_test_solver):
    caffe_runner.train(two_test_solver, tmp_path / "a.log", progress=False)
    log = parse_log(tmp_path / "a.log")
    out = plot_runs({"a": log, "b": log}, "loss", tmp_path / "fig.png", test_nets=["val", "train_subset"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "fig.csv").read_text().splitlines()
    assert rows[0] == "run,phase,NumIters,Seconds,loss"
    phases = {tuple(r.split(",")[:2]) for r in rows[1:]}
    assert phases == {(r, p) for r in "ab" for p in ("train", "val", "train_subset")}
    with pytest.raises(ValueError, match="no run has an output named 'top5'"):
        plot_runs({"a": log}, "top5", tmp_path / "x.png")


@pytest.mark.slow
def test_cli_plot_log_and_parse_log(tmp_path, two_test_solver):
    caffe_runner.train(two_test_solver, tmp_path / "run.log", progress=False)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    subprocess.run([sys.executable, "-m", "tools.plot_log", str(tmp_path / "run.log"), "--metric", "accuracy",
                    "--out", str(tmp_path / "acc.png")], cwd=REPO, check=True, env=env, capture_output=True)
    assert (tmp_path / "acc.png").exists() and (tmp_path / "acc.csv").exists()
    subprocess.run([sys.executable, "-m", "tools.parse_log", str(tmp_path / "run.log")], cwd=REPO, check=True,
                   capture_output=True)
    assert (tmp_path / "run.log.train").exists() and (tmp_path / "run.log.test1").exists()
    bad = subprocess.run([sys.executable, "-m", "tools.plot_log", str(tmp_path / "missing.log"), "--out", "x.png"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "no such log" in bad.stderr


@pytest.mark.skipif(not shutil.which("dot"), reason="Graphviz's dot is not installed (the no-root wheel set-up "
                    "has none; test_draw_net_without_graphviz_exits_1_with_one_line covers that case)")
def test_draw_net(tmp_path, two_test_solver):
    out = subprocess.run([sys.executable, "-m", "tools.draw_net", str(tmp_path / "net.prototxt"),
                          str(tmp_path / "net.png")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "net.png").read_bytes()[:4] == b"\x89PNG"


def tiny_net_prototxt(path):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 28, 28]))
    n.fc = L.InnerProduct(n.data, num_output=10)
    return write_prototxt(path, n.to_proto())


def test_draw_net_without_graphviz_exits_1_with_one_line(tmp_path, monkeypatch):
    from tools.draw_net import GRAPHVIZ_MISSING, GraphvizMissing, draw

    net = tiny_net_prototxt(tmp_path / "net.prototxt")
    no_dot = tmp_path / "bin-without-dot"  # a PATH where Graphviz's dot is not; the interpreter is named in full
    no_dot.mkdir()
    out = subprocess.run([sys.executable, "-m", "tools.draw_net", str(net), str(tmp_path / "net.png")], cwd=REPO,
                         env={**os.environ, "PATH": str(no_dot)}, capture_output=True, text=True)
    assert (out.returncode, out.stdout, out.stderr) == (1, "", "error: " + GRAPHVIZ_MISSING + "\n")
    assert GRAPHVIZ_MISSING == ("net diagrams skipped: Graphviz's `dot` is not installed (apt-get install graphviz, "
                                "brew install graphviz, or conda install graphviz)")
    monkeypatch.setenv("PATH", str(no_dot))
    with pytest.raises(GraphvizMissing):
        draw(net, tmp_path / "net.svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin-without-dot", "net.prototxt"]


def test_doctor_without_graphviz_lists_it_and_fails_on_nothing_else(tmp_path, monkeypatch, capsys):
    from tools import doctor

    status = doctor.main()
    if shutil.which("dot"):
        assert "[ok  ] graphviz dot" in capsys.readouterr().out
    (tmp_path / "bin-without-dot").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin-without-dot"))
    assert doctor.main() == status
    out = capsys.readouterr().out
    assert "[--  ] graphviz dot           missing: net diagrams are skipped\n" in out
    assert "fix: apt-get install graphviz, brew install graphviz, or conda install graphviz\n" in out


@pytest.mark.parametrize("module", ["tools.caffe_runner", "tools.parse_log", "tools.plot_log", "tools.draw_net"])
def test_cli_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "usage:" in out.stdout


def test_write_if_changed_keeps_the_date_of_an_unchanged_file(tmp_path):
    from tools.fileio import write_if_changed

    path = tmp_path / "sub" / "a.prototxt"
    assert write_if_changed(path, "x: 1\n") and path.read_text() == "x: 1\n"
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert not write_if_changed(path, "x: 1\n") and path.stat().st_mtime_ns == 1_000_000_000
    assert write_if_changed(path, "x: 2\n") and path.read_text() == "x: 2\n"
    assert path.stat().st_mtime_ns != 1_000_000_000


def test_write_prototxts_writes_messages_and_text_and_keeps_unchanged_files(tmp_path):
    from google.protobuf import text_format

    from tools.fileio import write_prototxts

    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 4, 4]))
    net = n.to_proto()
    solver = make_solver(net="net.prototxt", base_lr=0.1, max_iter=3)
    written = write_prototxts({"net.prototxt": net, "solver.prototxt": solver, "note.prototxt": "# text\n"},
                              tmp_path / "sub")
    assert written == [tmp_path / "sub" / f for f in ("net.prototxt", "solver.prototxt", "note.prototxt")]
    assert written[0].read_text() == text_format.MessageToString(net)  # what the committed prototxts hold
    assert read_solver(written[1]) == solver and written[2].read_text() == "# text\n"
    for path in written:
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    write_prototxts({"net.prototxt": net, "solver.prototxt": make_solver(net="net.prototxt", base_lr=0.2)},
                    tmp_path / "sub")
    assert written[0].stat().st_mtime_ns == 1_000_000_000, "an unchanged prototxt keeps its date"
    assert written[1].stat().st_mtime_ns != 1_000_000_000 and "base_lr: 0.2" in written[1].read_text()


def test_load_checked_net_copies_fitting_weights_and_explains_the_rest(tmp_path):
    from tools.weights import WeightsMismatch, load_checked_net

    def net_file(name, outputs):
        n = caffe.NetSpec()
        n.data = L.Input(shape=dict(dim=[1, 3]))
        n.fc = L.InnerProduct(n.data, num_output=outputs, weight_filler=dict(type="gaussian", std=1))
        return write_prototxt(tmp_path / name, n.to_proto())

    trained = caffe.Net(str(net_file("two.prototxt", 2)), caffe.TEST)
    trained.save(str(tmp_path / "two.caffemodel"))
    net = load_checked_net(tmp_path / "two.prototxt", tmp_path / "two.caffemodel")
    np.testing.assert_array_equal(net.params["fc"][0].data, trained.params["fc"][0].data)
    with pytest.raises(WeightsMismatch, match="layer 'fc' weights: .* holds 2x3, the net wants 5x3"):
        load_checked_net(net_file("five.prototxt", 5), tmp_path / "two.caffemodel")  # Caffe would abort


def test_read_json_moves_a_damaged_cache_aside_or_names_the_file_and_the_fix(tmp_path):
    from tools.cli import exit_on
    from tools.fileio import DamagedFile, read_json

    path = tmp_path / "val_full.json"
    assert read_json(path) is None  # none yet
    path.write_text('{"accuracy": 0.75}')
    assert read_json(path) == {"accuracy": 0.75}
    lines = []
    for n, (damage, problem) in enumerate([(b'{"weights": "snap', "not valid JSON: Unterminated string"),
                                           (b"\xff\xfe{}", "not UTF-8 text"), (b"[1, 2]", "a JSON list, not an object"),
                                           (b"", "not valid JSON: Expecting value")], 1):
        path.write_bytes(damage)
        with pytest.raises(DamagedFile) as e:
            read_json(path, fix="rerun with --fresh")
        assert str(e.value).startswith(f"{path} is damaged ({problem}") and "\n" not in str(e.value)
        assert str(e.value).endswith(". Fix: rerun with --fresh")
        assert path.read_bytes() == damage, "refused, yet changed"
        assert read_json(path, log=lines.append) is None and not path.exists()
        aside = tmp_path / ("val_full.json.broken" + (f".{n}" if n > 1 else ""))
        assert aside.read_bytes() == damage, "a damaged file was not kept"
        assert lines[-1].startswith(f"{path} was damaged ({problem}") and lines[-1].endswith(
            f"moved aside to {aside.name}; making it again")
    path.write_text("null")
    with pytest.raises(SystemExit, match=r"^error: .*val_full\.json is damaged \(a JSON NoneType.*Fix: x$"), exit_on():
        read_json(path, fix="x")


def test_exit_on_ends_expected_failures_in_one_line(tmp_path):
    import errno

    from tools.cli import exit_on

    with pytest.raises(SystemExit, match=r"^error: bad --max-iter$"), exit_on(ValueError):
        raise ValueError("bad --max-iter")
    full = (r"^error: .*/out\.log: No space left on device \(errno 28\): the disk is full \([\d.]+ [kMGT]?B(ytes)? "
            r"free of .*\)\. Fix: free space")
    with pytest.raises(SystemExit, match=full), exit_on():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.log"))
    with pytest.raises(SystemExit, match=r"^error: no Caffe\. Fix: make setup$"), exit_on():
        raise paths.SetupError("no Caffe. Fix: make setup")
    with pytest.raises(KeyError), exit_on(ValueError):  # the unexpected is not hidden
        raise KeyError("bug")


def test_plot_shows_every_test_point_including_the_first(tmp_path):
    from tools.parse_log import Log

    train = [{"NumIters": i, "Seconds": i, "LearningRate": 0.01, "loss": 9.0 if i == 0 else 0.5}
             for i in range(0, 101, 10)]
    test = [{"NumIters": i, "Seconds": i, "LearningRate": 0.01, "loss": 2.3 if i == 0 else 0.6 + i / 1000}
            for i in range(0, 101, 2)]
    log = Log(train=train, tests=[test])
    from tools.plot_log import _focus, curves

    lo, hi = _focus(curves({"a": log}, "loss"))
    assert lo < 0.6 and hi > 2.3, "the whole validation curve, from its first point"
    assert hi < 9.0, "the first training points do not flatten the figure"
    assert plot_runs({"a": log}, "loss", tmp_path / "f.png").exists()


def test_the_zoomed_panel_shows_where_the_validation_loss_turns(tmp_path):
    """Q1's deliverable: the loss falls from 2.3 to 0.55 at iteration 150, then rises to 0.65. The left panel
    shows it all; the zoomed one spans the turn (about 0.5-0.7) and circles the lowest point."""
    from tools.parse_log import Log
    from tools.plot_log import best_point, curves, zoom_range

    xs = list(range(0, 2001, 50))
    val = [2.3, 1.2, 0.8, 0.55, *[0.55 + 0.1 * (x - 150) / 1850 for x in xs[4:]]]
    row = {"Seconds": 0.0, "LearningRate": 0.01}
    log = Log(train=[{**row, "NumIters": x, "loss": 2.3 / (1 + x)} for x in xs],
              tests=[[{**row, "NumIters": x, "loss": y} for x, y in zip(xs, val, strict=True)]])
    tests = [c for c in curves({"baseline": log}, "loss", test_nets=["val"]) if c[1] != "train"]
    assert best_point(tests[0][2], tests[0][4], "loss") == (150, 0.55)
    assert best_point([0, 10, 20], [0.2, 0.9, 0.9], "accuracy") == (10, 0.9)
    lo, hi = zoom_range(tests, "loss")
    assert 0.45 < lo < 0.55 and 0.65 < hi < 1.0, (lo, hi)
    out = plot_runs({"baseline": log}, "loss", tmp_path / "f.png", test_nets=["val"], zoom=True)
    import matplotlib.image

    height, width = matplotlib.image.imread(out).shape[:2]
    assert width > 1.5 * height, "two panels side by side"


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_in_a_file(tmp_path):
    import io

    from tools.progress import PlainProgress, progress_bar, progress_iter

    log = io.StringIO()
    bar = progress_bar(total=1500, initial=300, desc="q1/baseline", file=log)
    assert isinstance(bar, PlainProgress)
    for _ in range(60):
        bar.update(20)
        bar.set_postfix({"loss": "0.5"}, refresh=False)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 8, lines  # 30%, 40%, ... 100%: every 10% from the resume point
    assert lines[-1].startswith("q1/baseline: 100% (1500/1500 it) in ") and lines[-1].endswith("loss=0.5")
    assert not isinstance(progress_bar(total=10, file=io.StringIO(), enabled=False), PlainProgress)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    bar = progress_bar(total=10, desc="x", file=term)
    assert not isinstance(bar, PlainProgress)
    bar.update(10)
    bar.close()
    assert "\r" in term.getvalue(), "tqdm redraws its bar on a terminal"
    few = io.StringIO()
    assert list(progress_iter(range(3), desc="predict", unit="batch", file=few)) == [0, 1, 2]
    assert few.getvalue().splitlines()[-1].startswith("predict: 100% (3/3 batch)")


def test_runinfo_durations_and_machine():
    from tools import runinfo

    assert [runinfo.duration(s) for s in (4.4, 59.6, 453, 3725)] == ["4 s", "1 min 00 s", "7 min 33 s", "1 h 02 min"]
    m = runinfo.machine()
    assert m["cores"] >= 1 and m["date"].endswith("UTC")
    assert runinfo.describe({"date": "2026-12-04 20:00 UTC", "cpu": "CPU X", "cores": 2, "loadavg": [1.93, 1, 1]}) \
        == "2026-12-04, CPU X, 2 cores, load average 1.93 at the start"


def test_import_cycles_finds_a_lazy_circle_and_the_tree_has_none(tmp_path):
    from tools import import_cycles

    pkg = tmp_path / "tools"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from tools.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from tools import a  # lazy: hidden from the loader\n")
    (pkg / "c.py").write_text("import tools.a\n")
    graph = import_cycles.module_imports(tmp_path, packages=("tools",))
    assert graph["tools.b"] == {"tools.a"} and graph["tools.c"] == {"tools.a"}
    assert import_cycles.cycles(graph) == [["tools.a", "tools.b"]]
    assert import_cycles.cycles(import_cycles.module_imports(paths.REPO)) == []


def test_snapshot_weights_read_from_the_wire_format_equal_protobufs_own_reading():
    from caffe.proto import caffe_pb2

    from tools.snapshots import _finite, _weights

    rng = np.random.default_rng(0)
    floats = rng.normal(size=300).astype(np.float32)
    legacy = caffe_pb2.BlobProto(num=1, channels=3, height=10, width=10, data=floats, diff=floats[:5])
    shaped = caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[2, 150]), double_data=floats.astype(np.float64))
    [a], [b] = _weights(legacy), _weights(shaped)
    assert a.dtype == np.float32 and np.array_equal(a, np.asarray(legacy.data, dtype=np.float32))
    assert b.dtype == np.float64 and np.array_equal(b, np.asarray(shaped.double_data))
    assert _weights(caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[0]))) == []
    assert _finite(legacy)
    legacy.data[299] = float("inf")
    assert not _finite(legacy)
