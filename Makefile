# Entry points of the toolkit. `make help` lists them.
# CPU by default; GPU=0 (or GPU=0,1) runs on CUDA devices with a CUDA build (make setup CAFFE_GPU=1).
SHELL := /bin/bash
VENV ?= .venv
export VENV
PY := $(VENV)/bin/python
GPU ?=
export GPU

.PHONY: help setup doctor test lint

help:
	@echo "make setup    build Caffe (cached outside the clone) and .venv; CAFFE_GPU=1 for CUDA"
	@echo "make doctor   report the Caffe build, pycaffe, GPUs, datasets and weights"
	@echo "make test     setup, then the test suite"
	@echo "make lint     ruff"

setup:
	@bash tools/setup/setup.sh

doctor: setup
	@$(PY) -m tools.doctor

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(PY) -m ruff check .
