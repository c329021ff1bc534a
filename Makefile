# The two commands a new user runs: `make demo` and `make test`.
# `make demo` installs only what the demo needs (no torch, no CUDA libraries); `make test` installs everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HASH := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(HASH)
DEMO_STAMP := $(VENV)/.demo-$(HASH)
OUT ?= out/demo
MODEL ?=

.PHONY: demo test test-slow test-ray lint bench gpu-smoke install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[dev,hf,train]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# the simulated-engine demo: the core package plus evaluation (scikit-learn, matplotlib)
$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[eval]'
	rm -f $(VENV)/.demo-*
	touch $(DEMO_STAMP)

install: $(STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/tagllm build recipes/demo.yaml --out $(OUT) --overwrite
	$(VENV)/bin/tagllm eval $(OUT)
	$(VENV)/bin/tagllm inspect $(OUT)
	@echo "dataset: $(OUT) (card: $(OUT)/README.md)"

test: $(STAMP)
	$(VENV)/bin/pytest -q

test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -m slow

# Ray runner on a private local cluster (2 CPUs, 200 MB object store): equality, worker kill, driver kill
test-ray: $(STAMP)
	$(PIP) install -q -e '.[ray]' 'sglang-router==0.3.2'
	$(VENV)/bin/pytest -q -m slow tests/run/test_ray.py tests/run/test_router_affinity.py

lint: $(STAMP)
	$(VENV)/bin/ruff check builder tests

bench: $(STAMP)
	$(PIP) install -q -e '.[ray]'
	$(PY) tests/benchmarks/run_all.py

# On a GPU machine with `pip install -e '.[sglang]'`: make gpu-smoke MODEL=Qwen/Qwen2.5-VL-3B-Instruct
gpu-smoke: $(STAMP)
	@test -n "$(MODEL)" || (echo "usage: make gpu-smoke MODEL=<model id or dir>"; exit 2)
	$(PIP) install -q -e '.[sglang]'
	$(VENV)/bin/tagllm build recipes/demo.yaml --engine sglang --model $(MODEL) --out out/gpu-smoke --overwrite
	$(VENV)/bin/tagllm inspect out/gpu-smoke

clean:
	rm -rf out .pytest_cache
