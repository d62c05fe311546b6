# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each first installs what it needs into .venv (once; again only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all train-demo bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU build of torch first: an unpinned install pulls a multi-GB CUDA build from PyPI.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hinet-deploy demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q --run-slow

train-demo: $(STAMP)
	$(PY) -m hinet_deploy.demo.train -o export/weights/hinet-demo-denoise.pth

bench: $(STAMP)
	$(PY) benchmarks/restorer_overhead.py
