"""The README says what the runs measured and commands that work as printed in a fresh clone.

Its measured-results section is generated: `make demo` writes docs/demo_results.md (committed) and
`.venv/bin/python demo.py --readme` copies it between the README's demo:results markers."""

import importlib.util
import re
import subprocess
import sys

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
        f"README.md's measured results differ from {demo.RESULTS_FILE}: run `.venv/bin/python demo.py --readme`")


def test_demo_results_have_every_variant_and_mode():
    text = (REPO / demo.RESULTS_FILE).read_text()
    for name in [*demo.Q1_VARIANTS, *(m for m, _ in demo.Q2_ROWS)]:
        assert re.search(rf"^\| {name} \| .* \| \d+ \|$", text, re.M), name
    assert re.search(r"held-out submission of the best mode scores 0\.\d{3}", text)


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
    for interpreter, module, script in python_commands("\n".join(fixes)):
        assert interpreter == ".venv/bin/python", fixes
        assert importlib.util.find_spec(module) is not None if module else (REPO / script).exists()
