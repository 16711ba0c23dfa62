# Two commands: `make run` (the main job) and `make test`. Both create .venv if missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Stage commands in dvc.yaml call `python`: the venv's must come first on PATH.
export PATH := $(BIN):$(PATH)
export PREFECT_HOME ?= $(CURDIR)/.prefect
# Tools run with the project's environment defaults (telemetry off, quiet logs: stages/common/environment.py)
WITH_DEFAULTS := $(BIN)/python -m stages.common.environment

# TensorFlow build: cpu by default, `make install GPU=1` for tensorflow[and-cuda] (exclusive extras in uv.lock)
TF_BUILD := $(if $(GPU),gpu,cpu)
UV_VERSION := 0.13.9
# Test workers: one per core and one more, which takes the CPU a test leaves idle while it waits on a server, a
# schedule or a kill (docs/architecture.md)
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) + 1 )))

.PHONY: install run stop test check ui bench docs plots clean

install: $(VENV)/.installed-$(TF_BUILD)

# Exactly the locked set (uv.lock); --locked fails when pyproject.toml and the lock disagree.
# Upgrading: `uv lock --upgrade` (or --upgrade-package NAME), then `make install`, and commit uv.lock.
$(VENV)/.installed-$(TF_BUILD): pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv sync --locked --compile-bytecode --python $(BIN)/python --extra $(TF_BUILD) --extra dev
	test -d .dvc || $(BIN)/dvc init --quiet
	test ! -d .git || $(BIN)/pre-commit install --install-hooks >/dev/null
	rm -f $(VENV)/.installed-*
	touch $@

# Against the project's local Prefect server, started by the first run and reused (`make stop` ends it), or the
# one PREFECT_API_URL names. PROFILE=full: fast.ai's full size (profiles/full.yaml) as a DVC experiment.
run: install
ifdef PROFILE
	$(BIN)/python -m pipelines.flow --profile $(PROFILE)
else
	api=$${PREFECT_API_URL:-$$($(BIN)/python -m pipelines.server url)} && \
	PREFECT_API_URL=$$api $(BIN)/python -m pipelines.flow
endif

stop:
	$(BIN)/python -m pipelines.server stop

# The whole suite (what CI runs; the 15 slowest tests are listed at the end)
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# The inner loop, about 2 minutes: lint, format, the stage deps, and the tests marked not slow (no pipeline run,
# no server, no TensorFlow stage process)
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pipelines.stage_deps
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS)

# MLflow 3.17's UI opens every experiment as GenAI unless told otherwise (scripts/check_mlflow_ui.py)
ui: install
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db $(BIN)/python -m stages.common.tracking_store
	@echo "open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (the runs tables, not GenAI's)"
	$(WITH_DEFAULTS) mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

bench: install
	$(BIN)/python -m benchmarks.run

# docs/results.md and the README's headline table, rendered from benchmarks/results/*.json
docs: install
	$(BIN)/python -m benchmarks.render

# DVC's default plots page loads Vega from a CDN; this one inlines it so plots render offline too.
VEGA := .cache/vega
plots: install $(VEGA)/template.html
	$(WITH_DEFAULTS) dvc plots show --html-template $(VEGA)/template.html -o dvc_plots
	@echo "open dvc_plots/index.html"

$(VEGA)/template.html: scripts/offline_plots_template.py
	npm install --silent --no-audit --no-fund --prefix $(VEGA) vega@5 vega-lite@5 vega-embed@6
	$(BIN)/python scripts/offline_plots_template.py $(VEGA)/node_modules $@

# On a GPU machine (docs/operations.md#gpu): the devices and the CUDA build TensorFlow sees, then one short pass of
# each GPU-heavy kind of work, its throughput recorded in benchmarks/results/gpu.json. Fails when no GPU is visible.
.PHONY: gpu-check
gpu-check: install
	$(BIN)/python -m benchmarks.gpu_check

# docs/images/*.png: the MLflow experiment view, the Prefect run graph and `make plots`' page, shot by headless
# Chromium (Debian: apt-get install chromium) from this workspace's latest flow run (scripts/screenshots.py)
.PHONY: screenshots
screenshots: install $(VEGA)/template.html
	$(BIN)/python scripts/screenshots.py
