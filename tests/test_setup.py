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


def test_every_patch_says_why():
    patches = sorted((SETUP / "patches").glob("*.patch"))
    assert len(patches) >= 3
    for p in patches:
        head = p.read_text().split("\n---", 1)[0]
        assert head.startswith("Why:"), f"{p.name} needs a 'Why:' header"


def test_second_setup_only_checks():
    out = subprocess.run(["bash", str(SETUP / "setup.sh")], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "VENV": sys.prefix})
    assert out.returncode == 0, out.stderr
    assert "Caffe: cached build" in out.stdout or "CAFFE_ROOT" in out.stdout, out.stdout
    assert "building" not in out.stdout and "installing" not in out.stdout


def test_prefix_is_named_by_the_build_key():
    if os.environ.get("CAFFE_ROOT"):
        pytest.skip("a user-supplied Caffe is in use")
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


def test_failed_source_fetch_is_one_clear_line(build_sandbox):
    out = run_build(build_sandbox, {"DEBIAN_MIRROR": "http://127.0.0.1:9/debian"})
    assert out.returncode != 0
    fail = [ln for ln in out.stderr.splitlines() if "FAILED" in ln]
    assert len(fail) == 1 and "fetching the Caffe source package" in fail[0] and "Fix:" in fail[0]
    assert "log:" in fail[0] and not (build_sandbox / "prefix").exists()


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
