"""The README says what the runs measured and commands that work as printed in a fresh clone.

Its measured sections are generated: `make demo` and `make test` write their numbers and times under
results/ only, and `make readme` (demo.py --readme) publishes them into docs/demo_results.md,
docs/measured.json and the figure in docs/, then copies those between the README's markers."""

import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

import demo

README = REPO / "README.md"
# `python -m module ...` or `python path/to/script.py ...` as a command (not the word "Python")
PY_COMMAND = re.compile(r"(?<![\w/.-])((?:[\w.~-]*/)*python3?) (-m ([\w.]+)|([\w/]+\.py))")


def test_readme_results_section_is_the_committed_demo_results():
    results = REPO / demo.RESULTS_FILE
    assert results.exists(), f"{results} missing: run `make demo` and commit it"
    readme = README.read_text()
    assert demo.README_START in readme and demo.README_END in readme, (
        f"README.md has no {demo.README_START} ... {demo.README_END} section")
    start, end = readme.index(demo.README_START), readme.index(demo.README_END) + len(demo.README_END)
    assert readme[start:end] == demo.readme_section(results.read_text()), (
        f"README.md's measured results differ from {demo.RESULTS_FILE}: run `make readme`")


def test_demo_results_have_every_variant_and_mode():
    text = (REPO / demo.RESULTS_FILE).read_text()
    for name in demo.Q1_VARIANTS:
        assert re.search(rf"^\| {name} \| .* \| \d+(\.\d)? \|$", text, re.M), name
    for name, _ in demo.Q2_ROWS:  # mean (range) of the accuracy and of the time, over the seeds
        assert re.search(rf"^\| {name} \| .* \| 0\.\d{{3}} \(0\.\d{{3}}-[01]\.\d{{3}}\) \| \d+ \(\d+-\d+\) \|$",
                         text, re.M), name
    assert re.search(r"held-out submission of seed \d+'s best mode scores 0\.\d{3}", text)


def test_the_readme_section_is_rendered_from_the_file_and_replaced_in_place():
    text = "# Measured by `make demo`\n\nintro\n\n## Q1\n\n| a | b |\n"
    section = demo.readme_section(text)
    assert section.startswith(demo.README_START) and section.endswith(demo.README_END)
    assert "\n### Q1\n" in section and "# Measured" not in section
    readme = f"before\n{demo.README_START}\nstale\n{demo.README_END}\nafter\n"
    assert demo.with_readme_section(readme, text) == f"before\n{section}\nafter\n"


def python_commands(text):
    return [(m.group(1), m.group(3), m.group(4)) for m in PY_COMMAND.finditer(text)]


def test_every_python_command_in_the_readme_runs_from_the_clone():
    """The system Python has no pycaffe: a command must name the toolkit's interpreter, and what it runs must exist."""
    commands = python_commands(README.read_text())
    assert commands, "the README shows no python commands?"
    for interpreter, module, script in commands:
        assert interpreter == ".venv/bin/python", f"`{interpreter} {module or script}`: write .venv/bin/python"
        if module:
            assert importlib.util.find_spec(module) is not None, module
        else:
            assert (REPO / script).exists(), script


def test_doctor_fixes_run_as_printed():
    out = subprocess.run([sys.executable, "-m", "tools.doctor"], cwd=REPO, capture_output=True, text=True,
                         timeout=120).stdout
    assert "CPU only; cpu" not in out and "; ;" not in out
    fixes = [line.split("fix:", 1)[1].strip() for line in out.splitlines() if "fix:" in line]
    from tools.doctor import python_command

    for interpreter, module, script in python_commands("\n".join(fixes)):
        # .venv/bin/python in a clone; the venv's full path where it lives elsewhere (the container's VENV)
        assert interpreter == python_command(), fixes
        assert importlib.util.find_spec(module) is not None if module else (REPO / script).exists()


def test_readme_times_section_is_docs_measured():
    """"Start here"'s times are docs/measured.json's (`make readme` publishes it from the runs)."""
    measured = json.loads((REPO / demo.MEASURED_FILE).read_text())
    readme = README.read_text()
    start, end = readme.find(demo.TIMES_START), readme.find(demo.TIMES_END)
    assert 0 <= start < end, f"README.md has no {demo.TIMES_START} ... {demo.TIMES_END} section"
    assert readme[start:end + len(demo.TIMES_END)] == demo.times_section(measured, demo.committed_bench(REPO),
                                                                          demo.committed_install(REPO)), (
        f"README.md's times differ from {demo.MEASURED_FILE}: run `make readme`")


def test_the_readme_types_no_time_by_hand():
    """Outside the generated sections, the parts of the README this project's runs measure give no durations
    ("~20 minutes", "about 2 minutes"): those go stale; the generated ones say when and where they were measured."""
    readme = README.read_text()
    for start, end in ((demo.TIMES_START, demo.TIMES_END), (demo.README_START, demo.README_END)):
        readme = readme[:readme.index(start)] + readme[readme.index(end):]
    start_here = readme[readme.index("## Start here"):readme.index("## Q1:")]
    assert not re.search(r"\d+\s*(minutes?|min|seconds?|s)\b", start_here), start_here


def test_the_published_q1_figure_and_its_numbers_agree():
    """docs/demo_val_loss_vs_iter.csv is the data of the published figure: its lowest baseline validation loss
    is the one docs/demo_results.md states, at the same iteration."""
    csv_file = REPO / (demo.FIGURE_FILE + ".csv")
    assert csv_file.exists() and (REPO / (demo.FIGURE_FILE + ".png")).exists(), "run `make readme` after `make demo`"
    rows = [r for r in csv.DictReader(csv_file.open()) if r["run"] == "baseline" and r["phase"] == "val"]
    best = min(rows, key=lambda r: float(r["loss"]))
    text = (REPO / demo.RESULTS_FILE).read_text()
    m = re.search(r"baseline's validation loss is lowest at iteration ([\d,]+) \(([\d.]+)\)", text)
    assert m, "docs/demo_results.md names the lowest point"
    assert int(m.group(1).replace(",", "")) == int(best["NumIters"]) and m.group(2) == f"{float(best['loss']):.3f}"


# ---- a run writes only under results/; `make readme` publishes -----------------------------------------------

LOG_TIME = "I20261204 10:{:02d}:{:02d}.000000 1 solver.cpp:1] "


def fake_q1_log(path, losses, train_accuracy=1.0, step=50):
    """A train.log as Caffe writes it, as far as tools.parse_log reads it: test passes of both TEST nets."""
    lines = ["# toolkit: caffe train (fixture)", LOG_TIME.format(0, 0) + "Solving fixture"]
    for k, loss in enumerate(losses):
        t = LOG_TIME.format(k // 60, k % 60)
        lines += [t + f"Iteration {k * step}, Testing net (#0)", t + "    Test net output #0: accuracy = 0.8",
                  t + f"    Test net output #1: loss = {loss}", t + f"Iteration {k * step}, Testing net (#1)",
                  t + f"    Test net output #0: accuracy = {train_accuracy}", t + "    Test net output #1: loss = 0.01"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def fake_runs(repo):
    """What a `make demo` leaves under results/ that demo.py reads, small: Q1's five variants, Q2's seeds."""
    q1 = repo / "results/q1/fashion-mnist"
    for v in demo.Q1_VARIANTS:
        fake_q1_log(q1 / v / "train.log", [2.3, 0.8, 0.55, 0.6, 0.65])
        (q1 / v / "val_full.json").write_text(json.dumps({"accuracy": 0.83, "loss": 0.62}))
    (q1 / "val_loss_vs_iter.png").write_bytes(b"\x89PNG fixture")
    (q1 / "val_loss_vs_iter.csv").write_text("run,phase,NumIters,Seconds,loss\nbaseline,val,100,2,0.55\n")
    modes = ("cached_features", "feature_extractor", "finetune", "scratch")
    seeds = {str(s): {m: {"accuracy": 0.6 + 0.1 * i + 0.01 * s, "seconds": 10.0 + i, "iterations": 300}
                      for i, m in enumerate(modes)} for s in (1, 2, 3)}
    q2 = {"modes": seeds["1"], "seeds": seeds, "heldout_accuracy": 0.8, "heldout_images": 500,
          "pretrained_accuracy": 0.85, "target_train": 100, "target_val": 500}
    (repo / "results/demo/q2").mkdir(parents=True)
    (repo / "results/demo/q2/transfer_results.json").write_text(json.dumps(q2))
    tests = repo / "results/tests"
    tests.mkdir(parents=True)
    machine = {"date": "2026-12-04 10:00 UTC", "cpu": "CPU X", "cores": 2, "loadavg": [0.5, 0.5, 0.5]}
    (tests / "make-test.json").write_text(json.dumps({"command": "make test", "seconds": 250.0, "passed": 220,
                                                      "skipped": 2, "failed": 0, "error": 0, "machine": machine}))


def git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A git repository holding the committed files demo.py reads and writes (README.md, docs/, the bench
    results, .gitignore), committed, with a `make demo`'s outputs under its ignored results/."""
    repo = tmp_path / "clone"
    for rel in ["README.md", ".gitignore", "bench/results.json", *(p.relative_to(REPO).as_posix()
                                                                  for p in (REPO / "docs").iterdir())]:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, repo / rel)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "committed")
    fake_runs(repo)
    monkeypatch.setattr(demo.paths, "REPO", repo)
    return repo


def test_the_demo_writes_only_under_results(clone, monkeypatch, capsys):
    """demo.py's whole result-writing path (its stages stubbed): index, numbers, times; git sees no change,
    and the demo ends by printing its index, as the README says."""
    for stage in ("stage_q1", "stage_q2", "stage_q3"):
        monkeypatch.setattr(demo, stage, lambda repo, gpu: None)
    assert git(clone, "status", "--porcelain") == ""
    assert demo.main([]) == 0
    assert git(clone, "status", "--porcelain") == "", "a run changed a committed file"
    out = capsys.readouterr().out
    index = (clone / demo.OUT / "index.md").read_text()
    assert index in out, "the demo prints its index"
    results = (clone / demo.RUN_RESULTS).read_text()
    assert "| baseline | 1.000 | 0.830 |" in results and "mean (range)" in results
    timings = json.loads((clone / demo.TIMINGS).read_text())
    assert set(timings["runs"]) == {"first", "latest"} and timings["runs"]["first"]["machine"]["cores"] >= 1
    assert demo.main(["--results-only"]) == 0 and git(clone, "status", "--porcelain") == ""


def test_make_readme_publishes_the_runs_and_then_has_nothing_to_do(clone, monkeypatch):
    for stage in ("stage_q1", "stage_q2", "stage_q3"):
        monkeypatch.setattr(demo, stage, lambda repo, gpu: None)
    demo.main([])
    changed = {p.relative_to(clone).as_posix() for p in demo.publish(clone)}
    assert {"README.md", demo.RESULTS_FILE, demo.MEASURED_FILE, demo.FIGURE_FILE + ".png"} <= changed
    assert (clone / demo.RESULTS_FILE).read_text() == (clone / demo.RUN_RESULTS).read_text()
    measured = json.loads((clone / demo.MEASURED_FILE).read_text())
    assert measured["make test"]["passed"] == 220 and measured["make demo"]["first"]["stages"]
    readme = (clone / "README.md").read_text()
    assert "| `make test` | 4 min 10 s: the whole suite, 220 passed, 2 skipped |" in readme
    assert demo.readme_section((clone / demo.RESULTS_FILE).read_text()) in readme
    assert demo.publish(clone) == [], "publishing twice changes nothing"


def test_a_failed_test_run_is_not_published(clone):
    record = clone / demo.TEST_RECORDS["make test"]
    record.write_text(json.dumps({**json.loads(record.read_text()), "failed": 3}))
    demo.publish(clone)
    assert "make test" not in json.loads((clone / demo.MEASURED_FILE).read_text()) or \
        json.loads((clone / demo.MEASURED_FILE).read_text())["make test"].get("failed", 0) == 0
