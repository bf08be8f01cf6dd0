"""README's measured install section is docs/install.json rendered (tools/install_report.py), never typed."""

import json

from tools import install_report

WHEEL = {"wheel": "bvlc_caffe-1.0.0.post20180821+debian8.abc-cp311-cp311-manylinux_2_34_x86_64.whl",
         "bytes": 31_400_000, "unpacked_bytes": 88_000_000, "platform_tag": "manylinux_2_34_x86_64",
         "python": "3.11", "release": "bookworm", "glibc": "2.34", "build": {"built": "2026-12-04T21:00:00Z"},
         "stages": {"opencv": "cached", "caffe": "700"},
         "bundled": [{"file": "libopenblas-1a2b3c4d.so.0", "soname": "libopenblas.so.0",
                      "package": "libopenblas0-openmp", "bytes": 35_000_000},
                     {"file": "libcaffe-5e6f7a8b.so.1.0.0", "soname": "libcaffe.so.1.0.0", "package": "",
                      "bytes": 4_000_000}]}
RUN = {"release": "trixie", "label": "wheel-check", "result": "passed",
       "steps": [{"command": "make setup CAFFE_WHEEL=/wheels/x.whl", "seconds": 41},
                 {"command": "make test", "seconds": 301}],
       "pytest": "240 passed, 3 skipped in 290.1s", "versions": "Python 3.13.5;no compiler",
       "load_average_start_end": "1.02 2.50", "cores": 2, "date": "2026-12-04 21:30 UTC"}


def test_render_known_answer():
    text = install_report.render({"wheels": {"cp311": WHEEL}, "runs": {"trixie-wheel-check": RUN}})
    assert text.startswith(install_report.START) and text.endswith(install_report.END)
    assert ("| `bvlc_caffe-1.0.0.post20180821+debian8.abc-cp311-cp311-manylinux_2_34_x86_64.whl` | Python 3.11 | "
            "`manylinux_2_34_x86_64` | 2.34 | 31.4 MB | 88.0 MB | 2 | Debian 12 bookworm root, 2026-12-04 | "
            "opencv cached, caffe 11m40s |") in text
    assert "libopenblas.so.0 (libopenblas0-openmp, 35.0 MB), libcaffe.so.1.0.0 (this build, 4.0 MB)" in text
    assert "`make setup CAFFE_WHEEL=/wheels/x.whl` 0m41s; `make test` 5m01s | 240 passed, 3 skipped in 290.1s" in text
    assert "Debian 13 trixie (Python 3.13.5;no compiler)" in text and "2 cores, 1.02 2.50" in text


def test_readme_section_is_the_committed_install_json():
    data = json.loads(install_report.DOCS.read_text()) if install_report.DOCS.exists() else {}
    readme = (install_report.REPO / "README.md").read_text()
    start, end = readme.index(install_report.START), readme.index(install_report.END) + len(install_report.END)
    assert readme[start:end] == install_report.render(data), "run `make readme` (tools/install_report.py)"


def test_with_section_refuses_a_readme_without_markers():
    try:
        install_report.with_section("no markers here", "x")
    except ValueError as e:
        assert "install:results" in str(e)
    else:
        raise AssertionError("expected ValueError")
