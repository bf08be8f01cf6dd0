"""The README's measured install section: the wheels and the clean-root runs, from the runs that made them.

    python -m tools.install_report --publish    # dist/*.whl.json and results/portability/*.json -> docs/install.json
    python -m tools.install_report              # README.md's install:results section from docs/install.json

`make wheel` writes a report beside each wheel (tools/wheel/assemble.py: size, platform tag, bundled
libraries); every clean-root run writes results/portability/RELEASE-LABEL.json (debian-chroot.sh: steps
and seconds, the pytest line, versions, load); `make container` writes results/portability/container.json.
Runs never touch committed files: `make readme` publishes (merging into docs/install.json, so publishing
one release keeps the others), and tests/test_install_report.py fails when README and docs/install.json
disagree.
"""

import argparse
import json

from tools.cli import exit_on
from tools.fileio import read_json, write_if_changed
from tools.paths import REPO, RESULTS
from tools.readme_sections import replace_between

DOCS = REPO / "docs/install.json"
START, END = "<!-- install:results:start -->", "<!-- install:results:end -->"
LABELS = {"wheel-build": "`make wheel`: build the wheel in a clean root (build packages only)",
          "wheel-check": "`make portability-wheel`: no root, no compiler: `make setup CAFFE_WHEEL=...`, `make test`",
          "setup-test": "`make portability`: build from source with sudo: `make setup`, `make test`",
          "container": "`make container`: `podman build` of the Dockerfile, `make test` inside"}
RELEASES = {"bookworm": "Debian 12 bookworm", "trixie": "Debian 13 trixie"}


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def minutes(seconds: int) -> str:
    return f"{seconds // 60}m{seconds % 60:02d}s"


def render(data: dict) -> str:
    lines = [START, "<!-- generated from docs/install.json by `make readme` (tools/install_report.py): "
             "edit neither by hand -->"]
    wheels = sorted(data.get("wheels", {}).values(), key=lambda w: w["python"])
    if wheels:
        lines += ["", "| wheel | for | platform tag | lowest glibc | size | unpacked | bundled libraries | built | "
                  "build stages (wall time; cached: an earlier run's build reused) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for w in wheels:
            done = w.get("stages", {})  # in build order, whatever order the JSON keeps
            stages = ", ".join(f"{name} {done[name] if done[name] == 'cached' else minutes(int(done[name]))}"
                               for name in ("opencv", "caffe") if name in done) or "-"
            lines.append(f"| `{w['wheel']}` | Python {w['python']} | `{w['platform_tag']}` | {w['glibc']} | "
                         f"{mb(w['bytes'])} | {mb(w['unpacked_bytes'])} | {len(w['bundled'])} | "
                         f"{RELEASES.get(w['release'], w['release'])} root, {w['build'].get('built', '')[:10]} | "
                         f"{stages} |")
        for w in wheels:
            libs = ", ".join(f"{b['soname']} ({b['package'] or 'this build'}, {mb(b['bytes'])})"
                             for b in sorted(w["bundled"], key=lambda b: -b["bytes"]))
            lines += ["", f"Bundled in the Python {w['python']} wheel, largest first (licences in the wheel's "
                      f"`licenses/`, listed in `licenses/BUNDLED.md`): {libs}."]
    runs = sorted(data.get("runs", {}).values(), key=lambda r: (r["label"], r["release"]))
    if runs:
        lines += ["", "| run | system | result | steps (wall time) | tests | machine, load average | date |",
                  "|---|---|---|---|---|---|---|"]
        for r in runs:
            steps = "; ".join(f"`{s['command']}` {minutes(s['seconds'])}" for s in r["steps"])
            system = RELEASES.get(r["release"], r["release"]) + (f" ({r['versions']})" if r.get("versions") else "")
            machine = f"{r['cores']} cores, {r['load_average_start_end']}"
            lines.append(f"| {LABELS.get(r['label'], r['label'])} | {system} | {r['result']} | {steps} | "
                         f"{r.get('pytest') or '-'} | {machine} | {r['date']} |")
    lines.append(END)
    return "\n".join(lines)


def with_section(readme: str, section: str) -> str:
    return replace_between(readme, START, END, section)


def collect(data: dict) -> dict:
    """docs/install.json's data with this clone's latest wheel reports and clean-root results merged in."""
    wheels, runs = dict(data.get("wheels", {})), dict(data.get("runs", {}))
    for report in sorted((REPO / "dist").glob("bvlc_caffe-*.whl.json")):
        w = read_json(report, expect={"wheel": str, "python": str},
                      fix="make the wheel again (`make wheel`), or move the report and its wheel out of dist/")
        w.pop("auditwheel_show", None)
        if not (REPO / "dist" / w["wheel"]).exists():
            continue  # a report whose wheel is gone describes nothing one can install
        wheels[f"cp{w['python'].replace('.', '')}"] = w
    for result in sorted((RESULTS / "portability").glob("*.json")):
        r = read_json(result, expect={"release": str, "label": str},
                      fix="run that clean-root check again (`make portability`), or move the file out of the folder")
        runs[f"{r['release']}-{r['label']}"] = r
    return {"wheels": wheels, "runs": runs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--publish", action="store_true",
                    help="merge dist/ and results/portability/ into docs/install.json")
    args = ap.parse_args(argv)
    with exit_on():
        data = read_json(DOCS, expect={"wheels": dict, "runs": dict},
                         fix="restore the committed copy (git checkout docs/install.json)") or {}
        if args.publish:
            data = collect(data)
            if write_if_changed(DOCS, json.dumps(data, indent=1, sort_keys=True) + "\n"):
                print(f"[install_report] {DOCS.relative_to(REPO)} updated")
    readme = REPO / "README.md"
    with exit_on(ValueError):
        if write_if_changed(readme, with_section(readme.read_text(), render(data))):
            print("[install_report] README.md install section updated")


if __name__ == "__main__":
    main()
