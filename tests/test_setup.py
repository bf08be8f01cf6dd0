"""`make setup`: idempotent, keyed cache, clear one-line failures, pins that agree."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "tools/setup"


def pins(lines):
    found = (re.match(r"^\s*-?\s*([\w.-]+)==([\w.]+)", ln) for ln in lines)
    return {m.group(1).lower(): m.group(2) for m in found if m}


def test_environment_yml_pins_match_requirements():
    req = pins((REPO / "requirements.txt").read_text().splitlines())
    env = pins((REPO / "environment.yml").read_text().splitlines())
    assert req and req == env


def test_constraints_pin_every_requirement():
    req = pins((REPO / "requirements.txt").read_text().splitlines())
    con = pins((REPO / "constraints.txt").read_text().splitlines())
    assert {k: con.get(k) for k in req} == req


PATCH_SETS = {"cpu": {}, "stock": {"CAFFE_OPENMP": "0"}, "cuda": {"CAFFE_GPU": "1"}, "wheel": {"CAFFE_FOR_WHEEL": "1"}}


@pytest.mark.parametrize("build", PATCH_SETS)
def test_every_patch_says_why_and_applies_cleanly_in_the_order_setup_uses(tmp_path, build):
    """The patch set of each kind of build, listed by common.sh's caffe_patches and applied by its
    unpack_patched_source (what build_caffe.sh runs) to the cached Debian source: each patch opens with its
    'Why:' paragraph, and each applies in turn without fuzz or offsets (a patch that drifted from the source)."""
    env = {**os.environ, **PATCH_SETS[build]}
    listed = subprocess.run(["bash", "-c", f"source {SETUP}/common.sh; caffe_patches"], capture_output=True,
                            text=True, env=env, check=True).stdout.split()
    assert listed and all((SETUP / p).is_file() for p in listed), listed
    for p in listed:
        head = (SETUP / p).read_text().split("\ndiff --git", 1)[0]
        assert head.startswith("Why: ") and len(head.split()) > 10, f"{p} needs a 'Why:' paragraph before its diff"
    cache = Path(env.get("CAFFE_CACHE", Path.home() / ".cache/caffe-toolkit"))
    if not any((cache / "src").glob("caffe_*.dsc")) and not any((cache / "src").glob("caffe_*.debian.tar.*")):
        pytest.skip("no cached Caffe source package (make setup fetches it)")
    out = subprocess.run(["bash", "-c", f'source {SETUP}/common.sh; unpack_patched_source "$1"', "_",
                          str(tmp_path / "src")], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert [ln[3:] for ln in out.stdout.splitlines() if ln.startswith("== ")] == listed
    drifted = [ln for ln in out.stdout.splitlines() if "with fuzz" in ln or re.search(r"\(offset -?\d+ lines?\)", ln)]
    assert not drifted, drifted


def test_second_setup_only_checks():
    out = subprocess.run(["bash", str(SETUP / "setup.sh")], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "VENV": sys.prefix})
    assert out.returncode == 0, out.stderr
    assert ("Caffe: cached build" in out.stdout or "CAFFE_ROOT" in out.stdout
            or "already installed" in out.stdout), out.stdout
    assert "building" not in out.stdout and "installing" not in out.stdout


def test_prefix_is_named_by_the_build_key():
    if os.environ.get("CAFFE_ROOT"):
        pytest.skip("a user-supplied Caffe is in use")
    if (Path(sys.prefix) / "caffe-wheel").exists():
        pytest.skip("Caffe comes from the wheel (tests/test_wheel.py checks it)")
    key = subprocess.run(["bash", "-c", f"source {SETUP}/common.sh; build_key {sys.executable}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    prefix = (Path(sys.prefix) / "caffe-prefix").read_text().strip()
    assert Path(prefix).name == key
    assert re.fullmatch(r"caffe-1\.0\.0-git20180821\.99bd997-8-[0-9a-f]{10}-py3\.\d+\.\d+-np[\d.]+-cpu", key)
    assert (Path(prefix) / ".complete").exists()


def run_build(cache, extra_env=None):
    env = {**os.environ, "CAFFE_CACHE": str(cache), "PYTHON_FOR_CAFFE": sys.executable, **(extra_env or {})}
    return subprocess.run(["bash", str(cache / "setup" / "build_caffe.sh"), str(cache / "prefix")],
                          capture_output=True, text=True, env=env)


@pytest.fixture
def build_sandbox(tmp_path):
    shutil.copytree(SETUP, tmp_path / "setup")
    return tmp_path


@pytest.mark.slow
def test_failed_source_fetch_is_one_clear_line(build_sandbox):
    out = run_build(build_sandbox, {"DEBIAN_MIRROR": "http://127.0.0.1:9/debian"})
    assert out.returncode != 0
    fail = [ln for ln in out.stderr.splitlines() if "FAILED" in ln]
    assert len(fail) == 1 and "fetching the Caffe source package" in fail[0] and "Fix:" in fail[0]
    assert "log:" in fail[0] and not (build_sandbox / "prefix").exists()


@pytest.mark.slow
def test_failed_patch_stops_before_anything_is_installed(build_sandbox):
    real_src = Path(os.environ.get("CAFFE_CACHE", Path.home() / ".cache/caffe-toolkit")) / "src"
    if not any(real_src.glob("*.dsc")):
        pytest.skip("no cached Caffe source package")
    shutil.copytree(real_src, build_sandbox / "src")
    (build_sandbox / "setup/patches/9999-broken.patch").write_text(
        "Why: a test.\n--- a/no/such/file.cpp\n+++ b/no/such/file.cpp\n@@ -1 +1 @@\n-a\n+b\n")
    out = run_build(build_sandbox)
    assert out.returncode != 0
    assert "FAILED: unpacking/patching" in out.stderr and "refresh it" in out.stderr
    assert not (build_sandbox / "prefix").exists()
    assert not list(build_sandbox.glob("build.*")), "the staging folder is removed"


def test_gpu_build_has_its_own_key_and_recipe():
    def key(**env):
        return subprocess.run(["bash", "-c", f"source {SETUP}/common.sh; build_key {sys.executable}"],
                              capture_output=True, text=True, env={**os.environ, **env}, check=True).stdout.strip()

    cpu, gpu = key(CAFFE_GPU="0"), key(CAFFE_GPU="1", CUDA_ARCH="9.0")
    assert cpu.endswith("-cpu") and gpu.endswith("-gpu-sm90")
    assert cpu.split("-")[4] != gpu.split("-")[4], "CUDA patches and libraries are part of the GPU recipe"
    flags = subprocess.run(["bash", "-c", f"source {SETUP}/common.sh; caffe_cmake_flags"], capture_output=True,
                           text=True, env={**os.environ, "CAFFE_GPU": "1", "CUDA_ARCH": "90"}).stdout
    assert "-DCPU_ONLY=OFF" in flags and "-DUSE_CUDNN=OFF" in flags and "-DCUDA_ARCH_BIN=90" in flags
    assert "-DUSE_NCCL=ON" in flags
    for p in (SETUP / "patches-cuda").glob("*.patch"):
        assert p.read_text().startswith("Why:"), p.name


# ---- releases: per-release package lists, Ubuntu advice (fake /etc/os-release through OS_RELEASE) ----

def os_release(tmp_path, **fields):
    path = tmp_path / "os-release"
    path.write_text("".join(f'{k}="{v}"\n' for k, v in fields.items()))
    return path


def in_common(script, os_release_path, **env):
    return subprocess.run(["bash", "-c", f"source {SETUP}/common.sh; {script}"], capture_output=True, text=True,
                          env={**os.environ, "OS_RELEASE": str(os_release_path), **env})


BOOKWORM = dict(ID="debian", VERSION_ID="12", VERSION_CODENAME="bookworm")
TRIXIE = dict(ID="debian", VERSION_ID="13", VERSION_CODENAME="trixie")
NOBLE = dict(ID="ubuntu", ID_LIKE="debian", VERSION_ID="24.04", VERSION_CODENAME="noble")
JAMMY = dict(ID="ubuntu", ID_LIKE="debian", VERSION_ID="22.04", VERSION_CODENAME="jammy")
MINT = dict(ID="linuxmint", ID_LIKE="ubuntu debian", VERSION_ID="22", VERSION_CODENAME="wilma")


@pytest.mark.parametrize("fields, extra", [
    (BOOKWORM, ["debian-packages-bookworm.txt"]),
    (TRIXIE, ["debian-packages-trixie.txt"]),
    (dict(ID="debian", VERSION_CODENAME="forky"), []),  # a release without a list of its own: the common one
    (NOBLE, ["debian-packages-ubuntu.txt"]),
    (MINT, ["debian-packages-ubuntu.txt"]),
])
def test_package_lists_follow_the_release(tmp_path, fields, extra):
    out = in_common("debian_package_lists", os_release(tmp_path, **fields))
    assert out.returncode == 0, out.stderr
    assert [Path(p).name for p in out.stdout.split()] == ["debian-packages.txt", *extra]
    assert all(Path(p).is_file() for p in out.stdout.split())


def test_release_lists_name_packages_and_bring_the_system_python():
    for release in ("bookworm", "trixie", "ubuntu"):
        lines = (SETUP / f"debian-packages-{release}.txt").read_text().splitlines()
        names = [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]
        assert all(re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", n) for n in names), names
        assert {"python3-dev", "python3-venv"} <= set(names), release  # venv module, Python.h, libpython.so


@pytest.mark.parametrize("fields", [NOBLE, JAMMY, MINT])
def test_setup_on_ubuntu_prints_advice_instead_of_failing_at_the_fetch(tmp_path, fields):
    env = {k: v for k, v in os.environ.items() if k not in ("CAFFE_ROOT", "DEBIAN_MIRROR")}
    out = subprocess.run(["bash", str(SETUP / "setup.sh")], capture_output=True, text=True, cwd=REPO,
                         env={**env, "OS_RELEASE": str(os_release(tmp_path, **fields)), "CAFFE_WHEEL": "0",
                              "CAFFE_CACHE": str(tmp_path / "cache"), "VENV": str(tmp_path / "venv")})
    assert out.returncode != 0
    assert f"This is Ubuntu {fields['VERSION_ID']}" in out.stdout
    for advice in ("CAFFE_WHEEL=", "DEBIAN_MIRROR=", "CAFFE_ROOT=", "24.04", "22.04", "NOT TESTED", "debian-chroot.sh"):
        assert advice in out.stdout, advice
    fail = [ln for ln in out.stderr.splitlines() if "FAILED" in ln]
    assert len(fail) == 1 and "Ubuntu" in fail[0] and "Fix:" in fail[0]
    assert "Debian packages" not in out.stdout, "nothing is installed before the user chooses"
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize("chosen, said", [({"DEBIAN_MIRROR": "http://127.0.0.1:9/debian"}, "from DEBIAN_MIRROR"),
                                          ({"CAFFE_ROOT": "/opt/caffe"}, "using CAFFE_ROOT=/opt/caffe")])
def test_ubuntu_with_a_choice_goes_on(tmp_path, chosen, said):
    out = in_common("ubuntu_advice && echo went-on", os_release(tmp_path, **NOBLE), **chosen)
    assert out.returncode == 0, out.stderr
    assert said in out.stdout and "not tested" in out.stdout and out.stdout.rstrip().endswith("went-on")


@pytest.mark.parametrize("fields", [BOOKWORM, TRIXIE])
def test_debian_gets_no_ubuntu_advice(tmp_path, fields):
    out = in_common("ubuntu_advice && echo went-on", os_release(tmp_path, **fields))
    assert out.returncode == 0 and out.stdout == "went-on\n", out.stdout + out.stderr


def test_too_old_python_is_one_clear_line(tmp_path):
    fake = tmp_path / "python3.10"  # answers the version check as Python 3.10 would
    fake.write_text("#!/bin/sh\ncase \"$*\" in *version_info\\ \\<*) exit 1;; *) echo 3.10;; esac\n")
    fake.chmod(0o755)
    script = f"""source {SETUP}/common.sh
        PYTHON={fake}
        eval "$(sed -n '/^make_venv()/,/^}}/p' {SETUP}/setup.sh)"
        make_venv"""
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         env={**os.environ, "CAFFE_CACHE": str(tmp_path), "VENV": str(tmp_path / "venv")})
    assert out.returncode != 0
    fail = [ln for ln in out.stderr.splitlines() if "FAILED" in ln]
    assert len(fail) == 1 and "Python 3.10 is too old" in fail[0] and "3.11" in fail[0], out.stderr
    assert not (tmp_path / "venv").exists()


def test_portability_script_refuses_unknown_releases_before_doing_anything(tmp_path):
    script = REPO / "tools/portability/debian-chroot.sh"
    env = {**os.environ, "PORTABILITY_ROOTS": str(tmp_path / "roots")}
    bad = subprocess.run(["bash", str(script), "Not-A-Release"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "usage" in bad.stderr
    unknown = subprocess.run(["bash", str(script), "nosuchrelease"], capture_output=True, text=True, env=env)
    assert unknown.returncode != 0 and "FAILED" in unknown.stderr
    assert not (tmp_path / "roots").exists()


def test_a_missing_wheel_is_one_clear_line_before_anything_is_made(tmp_path):
    out = subprocess.run(["bash", str(SETUP / "setup.sh")], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "CAFFE_WHEEL": str(tmp_path / "bvlc_caffe-nope.whl"),
                              "VENV": str(tmp_path / "venv"), "CAFFE_CACHE": str(tmp_path / "cache")})
    assert out.returncode != 0
    fail = [ln for ln in out.stderr.splitlines() if "FAILED" in ln]
    assert len(fail) == 1 and "bvlc_caffe-nope.whl" in fail[0] and "make wheel" in fail[0], out.stderr
    assert not (tmp_path / "venv").exists() and "apt" not in out.stdout
