"""The bvlc-caffe wheel (tools/wheel/), as a user gets it: `pip install WHEEL` into a fresh venv.

The wheel is TEST_WHEEL (CI builds one with `make wheel-here` and names it), CAFFE_WHEEL, or the one
`make wheel` (clean roots) or `make wheel-here` left in dist/ for this Python; without one these tests are
skipped with that reason (building one takes 10-15 minutes).
Everything runs from the throw-away venv with an environment that holds nothing of the toolkit's:
its console scripts (`caffe`, `convert_imageset`, `compute_image_mean`), pycaffe, a Python layer run by
`caffe`, and the libraries auditwheel bundled (each with its licence file, none of them libpython).
"""

import json
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"


def find_wheel():
    for var in ("TEST_WHEEL", "CAFFE_WHEEL"):  # TEST_WHEEL: CI's wheel, tested without switching .venv to it
        if os.environ.get(var, "0") not in ("", "0") and "://" not in os.environ[var]:
            return Path(os.environ[var])
    found = sorted((REPO / "dist").glob(f"bvlc_caffe-*-{TAG}-{TAG}-*.whl"))
    return found[-1] if found else None


WHEEL = find_wheel()
pytestmark = pytest.mark.skipif(WHEEL is None, reason=f"no bvlc_caffe {TAG} wheel in dist/ (make wheel-here or "
                                                      "make wheel builds one; CAFFE_WHEEL=path names one)")


def clean_env(**extra):
    """What a user's shell has: no PYTHONPATH, LD_LIBRARY_PATH or CAFFE_* of the toolkit's."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "PIP_CERT", "PIP_INDEX_URL", "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT",
            "PIP_DISABLE_PIP_VERSION_CHECK", "http_proxy", "https_proxy", "no_proxy")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["GLOG_minloglevel"] = "0"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory):
    """A new venv with the wheel and what it requires, installed by pip from the registry."""
    root = tmp_path_factory.mktemp("wheel-venv")
    venv.create(root / "venv", with_pip=True)
    py = root / "venv/bin/python"
    out = subprocess.run([py, "-m", "pip", "install", "-q", str(WHEEL), "-c", str(REPO / "constraints.txt")],
                         capture_output=True, text=True, env=clean_env(), cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr
    return root / "venv"


def run(venv_dir, *cmd, cwd, **env):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                          env=clean_env(PATH=f"{venv_dir / 'bin'}{os.pathsep}{os.environ['PATH']}", **env))


NET = """name: "tiny"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: 8 dim: 8 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
{extra}"""
DOUBLE_LAYER = '''import sys

import caffe


class Double(caffe.Layer):
    def setup(self, bottom, top):
        with open("layer_prefix.txt", "w") as f:  # which interpreter runs the layer
            f.write(sys.prefix)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff
'''


def test_console_scripts_and_version(user_venv, tmp_path):
    for tool in ("caffe", "compute_image_mean", "convert_imageset", "upgrade_net_proto_text"):
        assert (user_venv / "bin" / tool).exists(), tool
    out = run(user_venv, "caffe", "--version", cwd=tmp_path)
    assert out.returncode == 0 and "caffe version 1.0.0" in out.stdout + out.stderr, out.stdout + out.stderr


def test_caffe_time_and_a_python_layer_run_in_the_venvs_interpreter(user_venv, tmp_path):
    (tmp_path / "double_layer.py").write_text(DOUBLE_LAYER)
    extra = ('layer { name: "double" type: "Python" bottom: "conv" top: "conv2" '
             'python_param { module: "double_layer" layer: "Double" } }\n')
    (tmp_path / "net.prototxt").write_text(NET.format(extra=extra))
    out = run(user_venv, "caffe", "time", "-model", "net.prototxt", "-iterations", "2", cwd=tmp_path,
              PYTHONPATH=str(tmp_path))
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert re.search(r"Average Forward-Backward: [\d.]+ ms", log), log
    assert re.search(r"double\s+forward: [\d.]+ ms", log), log  # the Python layer was timed like any other
    assert (tmp_path / "layer_prefix.txt").read_text() == str(user_venv)  # in the venv's own interpreter


def test_pycaffe_forward_matches_numpy(user_venv, tmp_path):
    (tmp_path / "net.prototxt").write_text(NET.format(extra=""))
    script = """
import numpy as np, caffe, caffe_tools
net = caffe.Net("net.prototxt", caffe.TEST)
x = np.random.RandomState(0).randn(2, 3, 8, 8).astype(np.float32)
net.blobs["data"].data[...] = x
out = net.forward()["conv"]
w, b = net.params["conv"][0].data, net.params["conv"][1].data
ref = np.zeros_like(out)
for n in range(2):
    for o in range(4):
        for i in range(6):
            for j in range(6):
                ref[n, o, i, j] = (x[n, :, i:i + 3, j:j + 3] * w[o]).sum() + b[o]
np.testing.assert_allclose(out, np.maximum(ref, 0), rtol=1e-4, atol=1e-5)
print("ok", caffe.__file__, caffe_tools.build_info()["openmp"])
"""
    out = run(user_venv, user_venv / "bin/python", "-c", script, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout and str(user_venv) in out.stdout and out.stdout.split()[-1] == "1"


def test_convert_imageset_and_compute_image_mean_decode_jpeg_and_png(user_venv, tmp_path):
    """The reduced OpenCV (core, imgproc, imgcodecs) reads both formats Caffe's users feed it."""
    from PIL import Image

    rng = np.random.RandomState(1)
    images = []
    for i, ext in enumerate(("png", "jpg", "png", "jpg")):
        name = f"img{i}.{ext}"
        Image.fromarray((rng.rand(20, 24, 3) * 255).astype(np.uint8)).save(tmp_path / name)
        images.append(f"{name} {i % 2}")
    (tmp_path / "list.txt").write_text("\n".join(images) + "\n")
    out = run(user_venv, "convert_imageset", "--resize_height=16", "--resize_width=16", "./", "list.txt", "db",
              cwd=tmp_path)
    assert out.returncode == 0 and (tmp_path / "db/data.mdb").exists(), out.stdout + out.stderr
    assert "Processed 4 files" in out.stdout + out.stderr
    out = run(user_venv, "compute_image_mean", "db", "mean.binaryproto", cwd=tmp_path)
    assert out.returncode == 0 and (tmp_path / "mean.binaryproto").stat().st_size > 16 * 16 * 3, out.stderr


def test_bundled_libraries_are_relinked_licensed_and_free_of_libpython(user_venv):
    site = next((user_venv / "lib").glob("python3*/site-packages"))
    libs = sorted((site / "bvlc_caffe.libs").iterdir())
    elves = libs + sorted((site / "caffe_tools").glob("*.so")) + [site / "caffe/_caffe.so"]
    for elf in elves:
        ldd = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, env=clean_env()).stdout
        assert "not found" not in ldd, (elf.name, ldd)
        assert "libpython" not in ldd, (elf.name, ldd)
    names = " ".join(p.name for p in libs)
    for unwanted in ("gdal", "gdcm", "OpenEXR", "opencv_highgui", "opencv_videoio", "avcodec", "gtk"):
        assert unwanted not in names, unwanted
    assert "libcaffe" in names and "libopenblas" in names
    info = next(site.glob("bvlc_caffe-*.dist-info"))
    bundled = (info / "licenses/BUNDLED.md").read_text()
    for lib in libs:
        assert lib.name in bundled, lib.name
    for licence in re.findall(r"\| (licenses/\S+) \|", bundled):
        assert (info / licence).is_file(), licence


def test_wheel_report_matches_the_wheel():
    report_path = WHEEL.with_name(WHEEL.name + ".json")
    if not report_path.exists():
        pytest.skip(f"no report beside {WHEEL.name}")
    report = json.loads(report_path.read_text())
    assert report["wheel"] == WHEEL.name and report["bytes"] == WHEEL.stat().st_size
    tag = WHEEL.name.rsplit("-", 1)[1].removesuffix(".whl")
    assert report["platform_tag"] == tag and tag.startswith("manylinux_")
    with zipfile.ZipFile(WHEEL) as z:
        libs = {Path(n).name for n in z.namelist() if n.startswith("bvlc_caffe.libs/")}
    assert libs == {b["file"] for b in report["bundled"]}
