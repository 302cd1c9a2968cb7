# Two commands for a newcomer: `make lab` and `make test`. Both set up .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.aios-installed
# Keep the tests' JAX on 8 forced host devices; conftest sets it too.
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8

.PHONY: lab test lint venv browser bench demo soak clean

venv: $(STAMP)

# Reinstall when the Python metadata or the TypeScript extension changes (pip builds the labextension).
LABEXT_SRC := $(wildcard labextension/src/* labextension/style/* labextension/test/*) labextension/package.json labextension/yarn.lock
$(STAMP): pyproject.toml $(LABEXT_SRC) $(wildcard jupyter-config/server-config/*)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,cluster]"
	@touch $(STAMP)

# Debian's chromium for the browser tests (browsers cannot be downloaded by Playwright here).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks

# Lint and format check (ruff; configuration in pyproject.toml); the TypeScript build is strict itself.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) browser lint
	$(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider

# The quickstart, headless, in a scratch AIOS_HOME unless one is set; ends with a summary table.
demo: $(STAMP)
	$(BIN)/aios demo

# Each benchmark prints our numbers beside its baseline's, measured in the same run, and the ratio.
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }
	$(BIN)/python bench/data_loader.py
	$(BIN)/python bench/train_overhead.py
	$(BIN)/python bench/compress.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/serve_lm.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/cluster.py

# A long soak of the serving endpoint (the short one runs in make test).
soak: $(STAMP)
	AIOS_SOAK_SECONDS=600 $(BIN)/python -m pytest tests/test_serve_ops.py -k soak -p no:cacheprovider

clean:
	rm -rf $(VENV) test-artifacts labextension/node_modules labextension/lib labextension/lib-test labextension/tsconfig.tsbuildinfo aios_lab/labextension
