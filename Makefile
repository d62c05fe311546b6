# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each installs what it needs into .venv first (once; again only when pyproject.toml changes):
# the demo only the `export` extra (torch, onnx, onnxruntime, scikit-image's photographs); the
# tests everything (`test`: TensorRT-RTX, Ray, OpenVINO, PyAV, pytest, FFmpeg's CLI).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# PyTorch's CPU build. From the package index alone `pip install torch==2.13.0` resolves to the
# CUDA build on Linux x86-64 (several GB); where PyTorch's own index is reachable, point at its
# CPU wheels: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_FROM := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: demo test test-all train-demo bench

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: $(PY)
	$(PY) -m pip install -q $(TORCH_FROM) '$(TORCH)'
	touch $@

$(VENV)/.demo: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q -e '.[export]'
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.demo
	$(VENV)/bin/hinet-deploy demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q --run-slow

train-demo: $(VENV)/.demo
	$(PY) -m hinet_deploy.demo.train -o export/weights/hinet-demo-denoise.pth

bench: $(VENV)/.installed
	$(PY) benchmarks/restorer_overhead.py
