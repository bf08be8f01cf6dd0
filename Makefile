# Entry points of the toolkit. `make help` lists them.
# CPU by default; GPU=0 (or GPU=0,1) runs on CUDA devices with a CUDA build (make setup CAFFE_GPU=1).
SHELL := /bin/bash
VENV ?= .venv
export VENV
PY := $(VENV)/bin/python
GPU ?=
export GPU

DATASET ?= auto
Q2_SEED ?= 761218
Q2_IMAGES ?= 2000
Q3_MODEL ?= auto
# Files you already have (used as they are, checked by content, never downloaded over)
CIFAR10_ARCHIVE ?=
WEIGHTS ?=
# WikiArt download settings (see `python q2_wikiart_finetune/download_wikiart.py --help`)
Q2_WORKERS ?= 16
Q2_TIMEOUT ?= 30
Q2_FROM_DIR ?=
GPU_FLAG = $(if $(GPU),--gpu $(GPU),)

.PHONY: help setup doctor test test-fast lint demo q1 q2 q3 q3-notebooks bench prototxts caffe-selftest portability readme \
	wheel wheel-here portability-wheel container

help:
	@echo "make setup    .venv with Caffe: from a wheel (CAFFE_WHEEL=path-or-URL, or one in dist/; no root, no compiler),"
	@echo "              else built from Debian's source (cached outside the clone); CAFFE_GPU=1 for CUDA"
	@echo "make doctor   report the Caffe build, pycaffe, GPUs, datasets and weights"
	@echo "make demo     the whole toolkit offline on Fashion-MNIST, into results/ only; ends by printing results/demo/index.md"
	@echo "make test     setup, then the test suite"
	@echo "make q1       Q1: dropout and augmentation (DATASET=cifar10|fashion-mnist; default CIFAR-10 if obtainable;"
	@echo "              CIFAR10_ARCHIVE=path uses a cifar-10-python.tar.gz you have)"
	@echo "make q2       Q2: fine-tune AlexNet on WikiArt (Q2_SEED, Q2_IMAGES, Q2_WORKERS, Q2_TIMEOUT, Q2_FROM_DIR=images"
	@echo "              you have; WEIGHTS=path uses a .caffemodel you have; needs the internet for the rest)"
	@echo "make q3       Q3: run the three notebooks headless (Q3_MODEL=auto|bvlc_alexnet|demo|path/model.json;"
	@echo "              WEIGHTS=path uses a bvlc_alexnet.caffemodel you have)"
	@echo "make bench    stock Caffe, the OpenMP build and PyTorch side by side, into results/bench/"
	@echo "make test-fast  the tests that train nothing (-m \"not slow\")"
	@echo "make readme   publish the runs under results/ (demo, test, bench) and the wheels and clean-root runs"
	@echo "              (dist/, results/portability/) into docs/, bench/ and README.md's generated sections"
	@echo "make q3-notebooks  re-execute Q3's notebooks on the demo model into the committed .ipynb"
	@echo "make lint     ruff"
	@echo "make caffe-selftest  Caffe's own GoogleTest suite (every CPU test) on this build, 1 and 2 threads"
	@echo "make portability     setup + test in clean Debian 12 and 13 roots (debootstrap; root; slow)"
	@echo "make wheel    the bvlc-caffe wheels (cp311 on Debian 12, cp313 on Debian 13) in clean roots, into dist/ (root)"
	@echo "make wheel-here      the wheel for this machine's Debian and python3, built here, into dist/"
	@echo "make portability-wheel  no root, no compiler: make setup CAFFE_WHEEL=... && make test in clean roots (root)"
	@echo "make container       the CPU container image (Dockerfile) with podman, make test inside the build (root)"
	@echo "GPU=0 (or 0,1) runs on CUDA devices; needs make setup CAFFE_GPU=1"

demo: setup
	$(PY) demo.py $(GPU_FLAG)

q1: setup
	$(PY) -m q1_dropout_augment.experiment --dataset $(DATASET) $(if $(CIFAR10_ARCHIVE),--archive $(CIFAR10_ARCHIVE),) $(GPU_FLAG)

q2: setup
	$(PY) -m q2_wikiart_finetune.experiment --seed $(Q2_SEED) --images $(Q2_IMAGES) --workers $(Q2_WORKERS) \
		--timeout $(Q2_TIMEOUT) $(if $(Q2_FROM_DIR),--from-dir $(Q2_FROM_DIR),) $(if $(WEIGHTS),--weights $(WEIGHTS),) $(GPU_FLAG)

q3: setup
	$(PY) -m q3_visualize_break.run_notebooks --out results/q3 --model $(Q3_MODEL) $(if $(WEIGHTS),--weights $(WEIGHTS),) $(GPU_FLAG)

# PyTorch is a bench-only dependency (the local CPU wheel of torch 2.13.0)
bench: setup
	$(PY) -m pip install -q -r requirements-bench.txt -c constraints.txt
	$(PY) -m bench.run

# regenerate every committed prototxt from its generator (tests check they are equal)
prototxts: setup
	$(PY) -m q1_dropout_augment.nets --write
	$(PY) -m q2_wikiart_finetune.task --write
	$(PY) -m q2_wikiart_finetune.transfer_demo --write
	$(PY) -m q3_visualize_break.deploys --write

setup:
	@bash tools/setup/setup.sh

doctor: setup
	@$(PY) -m tools.doctor

test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

readme: setup
	$(PY) -m tools.install_report --publish
	$(PY) demo.py --readme
	$(PY) -m bench.run --readme-only

lint: setup
	$(PY) -m ruff check .
	$(PY) -m tools.import_cycles
	$(PY) -m q3_visualize_break.run_notebooks --check

# re-execute Q3's notebooks on the demo model (make demo first); the executed copies are committed
q3-notebooks: setup
	$(PY) -m q3_visualize_break.run_notebooks --model demo --out results/demo/q3 --commit

# Caffe's own GoogleTest suite, built once beside the cached build, for what our patches touch
caffe-selftest: setup
	@bash tools/setup/selftest.sh

# Caffe as a wheel (tools/wheel/), built in clean Debian roots; WHEEL_RELEASES picks the releases
WHEEL_RELEASES ?= bookworm trixie
wheel:
	@for r in $(WHEEL_RELEASES); do bash tools/portability/wheel.sh build $$r || exit 1; done
	@ls -l dist/*.whl

WHEEL_OUT ?= dist
wheel-here:
	bash tools/wheel/build_wheel.sh $(WHEEL_OUT)

# an ordinary user without a compiler or sudo: make setup CAFFE_WHEEL=... && make test, in clean roots
portability-wheel:
	@for r in $(WHEEL_RELEASES); do bash tools/portability/wheel.sh check $$r || exit 1; done

# the container image (Dockerfile), built with podman from a debootstrapped trixie base, make test inside
container:
	bash tools/portability/container.sh

# make setup && make test inside clean Debian roots (tools/portability/debian-chroot.sh)
portability:
	bash tools/portability/debian-chroot.sh bookworm
	bash tools/portability/debian-chroot.sh trixie
