# Two commands: `make run` (the main job) and `make test`. Both create .venv if missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Stage commands in dvc.yaml call `python`: the venv's must come first on PATH.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install run test ui bench plots clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --compile-bytecode --python $(BIN)/python -e '.[dev]'
	test -d .dvc || $(BIN)/dvc init --quiet
	touch $@

run: install
	$(BIN)/python -m pipelines.flow

test: install
	$(BIN)/python -m pytest

ui: install
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

bench: install
	$(BIN)/python -m benchmarks.run

# DVC's default plots page loads Vega from a CDN; this one inlines it so plots render offline too.
VEGA := .cache/vega
plots: install $(VEGA)/template.html
	$(BIN)/dvc plots show --html-template $(VEGA)/template.html -o dvc_plots
	@echo "open dvc_plots/index.html"

$(VEGA)/template.html: scripts/offline_plots_template.py
	npm install --silent --no-audit --no-fund --prefix $(VEGA) vega@5 vega-lite@5 vega-embed@6
	$(BIN)/python scripts/offline_plots_template.py $(VEGA)/node_modules $@
