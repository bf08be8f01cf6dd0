"""The benchmarks' bookkeeping (bench/): README's measured section, goals, log phases, curves. Nothing is timed."""

import json
from pathlib import Path

import pytest

from bench import frameworks, q1_train, run, transfer
from tools.parse_log import parse_lines

REPO = Path(__file__).resolve().parents[1]


def test_readme_headline_matches_results():
    """README's measured numbers are the committed bench/results.json's: `python -m bench.run --readme-only`
    rewrites the section after a bench run."""
    results = json.loads((REPO / "bench" / "results.json").read_text())
    section = run.readme_section((REPO / "README.md").read_text())
    assert section is not None, f"README.md has no {run.START} ... {run.END} section"
    assert section == run.headline_markdown(results), \
        "README's bench section differs from bench/results.json: run `.venv/bin/python -m bench.run --readme-only`"


def test_headline_of_committed_results_shows_their_numbers():
    """Each figure of the headline is the results.json field it claims to be (not a neighbour's, not unscaled)."""
    results = json.loads((REPO / "bench" / "results.json").read_text())
    text = run.headline_markdown(results)
    assert text.endswith("\n") and "| what | measured |" in text
    m, b = results["machine"], results["benchmarks"]
    assert text.startswith(f"Measured by `make bench` on {m['date']} ({m['cpu']}, {m['cores']} cores, "
                           f"{m['threads_used']} threads; load average {m['loadavg_start'][0]:.2f} at its start")
    for c in b["frameworks"]["cases"].values():
        stock, openmp, torch = (c["stock"]["forward_backward_s"], c["caffe"]["forward_backward_s"], c["torch"]["mean"])
        assert (f"| {c['name']}, batch {c['batch']}, forward+backward ms: stock Caffe / Caffe OpenMP / PyTorch | "
                f"{stock * 1000:.0f} / {openmp * 1000:.0f} / {torch * 1000:.0f} (OpenMP "
                f"{c['speedup_openmp_over_stock']:.2f}x faster than stock; "
                f"{c['ratio_caffe_over_torch_mean']:.2f}x PyTorch's time) |") in text, c["name"]
    speedups = ", ".join(f"{v} {r['speedup']:.2f}x" for v, r in b["q1_train"]["variants"].items())
    assert f"| {speedups} |" in text  # the Q1 goal's measured column, every variant in the results' order


def test_replace_section_round_trip(tmp_path):
    text = f"# Title\n\nbefore\n{run.START}\nold numbers\n{run.END}\nafter\n"
    new = run.replace_section(text, "| a | b |\n")
    assert run.readme_section(new) == "| a | b |\n"
    assert new.startswith("# Title\n\nbefore\n") and new.endswith(f"{run.END}\nafter\n")
    assert run.replace_section(new, "| a | b |\n") == new
    with pytest.raises(ValueError):
        run.replace_section("no markers\n", "x\n")
    readme = tmp_path / "README.md"
    readme.write_text(text)
    results = {"machine": {"date": "2026-01-01 00:00 UTC", "cpu": "cpu", "cores": 2, "threads_used": 2}}
    assert run.write_readme(results, readme)
    assert run.readme_section(readme.read_text()) == run.headline_markdown(results)
    plain = tmp_path / "plain.md"
    plain.write_text("nothing to replace\n")
    assert not run.write_readme(results, plain) and plain.read_text() == "nothing to replace\n"


def test_headline_of_partial_results():
    assert run.headline_markdown({}).startswith("Measured by `make bench`")
    failed = {"machine": {}, "benchmarks": {"frameworks": {"error": "boom"}, "q1_train": {"error": "boom"}}}
    assert "| goal |" not in run.headline_markdown(failed)


def layer_rows(stock, openmp):
    return frameworks.before_after(stock, openmp)


def synthetic_results(alexnet_ratio=0.80, q1_ratio=0.95, speedups=(1.6, 1.3), overhead=(5.0, 12.0, 8.0)):
    def case(name, ratio):
        return {"name": name, "batch": 16, "ratio_caffe_over_torch_mean": ratio,
                "ratio_openmp_over_torch_per_round": [ratio, ratio], "speedup_openmp_over_stock": 1.5,
                "stock": {"forward_backward_s": 1.5}, "caffe": {"forward_backward_s": 1.0},
                "torch": {"mean": 1.0 / ratio},
                "layer_types_before_after": layer_rows({"Convolution": 900.0, "LRN": 400.0, "Pooling": 200.0,
                                                        "Input": 0.0},
                                                       {"Convolution": 700.0, "LRN": 200.0, "Pooling": 100.0,
                                                        "Input": 0.0})}

    variants = {f"v{i}": {"speedup": s, "speedup_train": s + 0.1, "speedup_test": s - 0.1, "stock_caffe_s": 10.0 * s,
                          "openmp_caffe_s": 10.0} for i, s in enumerate(speedups)}
    worst = min(variants, key=lambda v: variants[v]["speedup"])

    def dp(net, over):
        return {"net": net, "path": net, "overhead_vs_caffe_time_pct": over, "data_path_overhead_pct": over - 1,
                "data_alone_s": 0.0001, "caffe_time_s": 0.02, "solver_update_pct": 1.0,
                "train_data_s": 0.02 * (1 + over / 100), "train_input_s": 0.02}

    return {"machine": {"date": "d", "cpu": "c", "cores": 2, "threads_used": 2, "loadavg_start": [0.1, 0.2, 0.3]},
            "benchmarks": {
                "frameworks": {"cases": {"alexnet_b16": case("AlexNet", alexnet_ratio), "q1_dropout_b128": case("Q1",
                                                                                                             q1_ratio)}},
                "q1_train": {"variants": variants, "worst": worst, "min_speedup": variants[worst]["speedup"],
                             "setup": {"max_iter": 400}},
                "data_path": {"build": "b", "cases": {"q1_dropout": dp("q1 a", overhead[0]),
                                                      "q1_dropout_augment": dp("q1 b", overhead[1]),
                                                      "alexnet_256": dp("alexnet", overhead[2])}}}}


def test_goals_say_which_hold_and_by_how_much():
    goals = run.goals(synthetic_results())
    assert [g["holds"] for g in goals] == [True, False, False, False, True]
    alexnet, q1, q1_train, q1_data, q2_data = goals
    assert alexnet["by"] == "" and "0.80" in alexnet["measured"]
    assert q1["by"] == "needs 1.12x less time"  # 0.95 / 0.85
    assert "LRN 400 -> 200 ms (2.00x; 20%)" in q1["limit"]  # per-layer times before and after
    assert q1_train["by"] == "the slowest needs 1.08x more" and "v1" in q1_train["limit"]
    assert q1_data["by"] == "2.0 points over" and "q1 b" in q1_data["limit"]
    assert "2.40 ms an iteration, far more than the data layer's own work (0.1 ms" in q1_data["limit"]
    text = run.headline_markdown(synthetic_results())
    assert "**no**: needs 1.12x less time" in text and "load average 0.10" in text
    assert run.markdown(synthetic_results() | {"machine": synthetic_results()["machine"] | {
        "peak": {"formula": "f"}, "vendor": "v", "caffe_build": "b", "caffe_built": "t", "openblas": "o",
        "numpy": "n", "torch": "t", "python": "p", "kernel": "k"}}).startswith("# Benchmarks")


def test_before_after_layer_table():
    rows = {r["type"]: r for r in frameworks.before_after({"Convolution": 60.0, "ReLU": 40.0}, {"Convolution": 30.0,
                                                                                                "ReLU": 10.0})}
    assert rows["ReLU"]["speedup"] == 4.0 and rows["Convolution"]["speedup"] == 2.0
    assert rows["Convolution"]["stock_share_pct"] == 60.0 and rows["Convolution"]["openmp_share_pct"] == 75.0


LOG = """# toolkit: caffe train -solver=s.prototxt (cwd /w)
I20261129 10:00:00.000000 1 caffe.cpp:100] Using GPUs none
I20261129 10:00:01.000000 1 solver.cpp:300] Solving q1
I20261129 10:00:01.000000 1 solver.cpp:340] Iteration 0, Testing net (#0)
I20261129 10:00:02.500000 1 solver.cpp:400]     Test net output #0: accuracy = 0.1
I20261129 10:00:02.500000 1 solver.cpp:340] Iteration 0, Testing net (#1)
I20261129 10:00:03.000000 1 solver.cpp:400]     Test net output #0: accuracy = 0.1
I20261129 10:00:03.100000 1 solver.cpp:220] Iteration 0 (0 iter/s, 0.1s/20 iters), loss = 2.3
I20261129 10:00:06.000000 1 solver.cpp:340] Iteration 200, Testing net (#0)
I20261129 10:00:07.000000 1 solver.cpp:400]     Test net output #0: accuracy = 0.7
I20261129 10:00:07.000000 1 solver.cpp:310] Optimization Done.
"""


def test_log_phases_split_setup_tests_and_training():
    p = q1_train.log_phases(LOG.splitlines())
    assert p["test_passes"] == 2
    assert p["setup_s"] == pytest.approx(1.0) and p["caffe_s"] == pytest.approx(7.0)
    assert p["test_s"] == pytest.approx(2.0 + 1.0) and p["train_s"] == pytest.approx(3.0)
    assert q1_train.log_phases([])["caffe_s"] == 0.0


def test_builds_take_turns():
    firsts = [q1_train.order(k, i)[0] for i in range(2) for k in range(5)]
    assert firsts[:5] == ["stock", "openmp", "stock", "openmp", "stock"] and firsts[5] == "openmp"
    assert all(set(q1_train.order(k, 0)) == {"stock", "openmp"} for k in range(5))


def test_time_to_accuracy_curve():
    log = parse_lines(LOG.splitlines())
    points = transfer.curve(log, total_seconds=10.0)  # the log spans 7 s: 3 s before it (e.g. feature extraction)
    assert [p["iteration"] for p in points] == [0, 200]
    assert [p["seconds"] for p in points] == [pytest.approx(5.5), pytest.approx(10.0)]
    assert transfer.first_reaching(points, 0.5) == pytest.approx(10.0) and transfer.first_reaching(points, 0.9) is None
    modes = {"finetune": {"accuracy": 0.861}, "cached_features": {"accuracy": 0.669},
             "feature_extractor": {"accuracy": 0.661}, "scratch": {"accuracy": 0.9}}
    assert transfer.levels(modes) == [0.66, 0.86]


def test_projected_make_q1_time():
    phases = {"setup_s": 1.0, "train_s": 8.0, "test_s": 3.0, "test_passes": 3}
    # 2000 iterations at 8 s / 400, and 11 passes at 1 s each
    assert q1_train.projected(phases, 400, 2000, 200) == pytest.approx(1.0 + 40.0 + 11.0)


def test_a_bench_run_writes_under_results_and_make_readme_publishes_it(tmp_path):
    """`make bench` writes results/bench/ (ignored); only `make readme` (--readme-only) copies it into bench/."""
    assert run.RUN_OUT == REPO / "results" / "bench"
    src, dest = tmp_path / "run", tmp_path / "published"
    dest.mkdir()
    assert run.publish(src, dest) == [], "no run, nothing to publish"
    src.mkdir()
    (src / "results.json").write_text("{}\n")
    (src / "results.md").write_text("# r\n")
    assert sorted(p.name for p in run.publish(src, dest)) == ["results.json", "results.md"]
    assert (dest / "results.md").read_text() == "# r\n"
    assert run.publish(src, dest) == [], "unchanged files are not rewritten"
