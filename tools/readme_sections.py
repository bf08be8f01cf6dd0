"""README.md's generated sections: text between a start and an end marker, written only by `make readme`.

demo.py (results, times), bench/run.py (the benchmark headline) and tools/install_report.py (wheels and
clean-root runs) each render their section; this one function puts a section in its place.
"""


def replace_between(readme: str, start_marker: str, end_marker: str, section: str) -> str:
    """`readme` with the text from `start_marker` to `end_marker` (both included) replaced by `section`."""
    start, end = readme.find(start_marker), readme.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {start_marker} ... {end_marker} section")
    return readme[:start] + section + readme[end + len(end_marker):]
