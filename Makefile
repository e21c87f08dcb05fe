# Set-up and the two entry points: `make demo` and `make test`. Both create .venv on a fresh machine.
# TORCH_SPEC picks the PyTorch requirement: the default takes whatever pip resolves for this machine
# (a CUDA build on Linux with a GPU); CI sets TORCH_SPEC=torch==2.13.0 (a CPU build).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch>=2.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

# test extras: pytest, onnx/onnxruntime (export tests), ruff, and Triton on Linux x86_64 (interpreter tests)
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/mambaseg demo --out demo_out

test: lint
	$(PY) -m pytest -q tests

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/scan.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
