# Two commands: `make run` (the main job) and `make test`. Both create the venv if missing.
# Its Python: PYTHON=/path/to/python3.X, else the newest supported one on PATH (scripts/find-python.sh);
# VENV=.venv-3.13 keeps a second venv beside .venv (.ci/run checks Python 3.13 in one).
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
USER_PATH := $(PATH)
# Stage commands in dvc.yaml call `python`: the venv's must come first on PATH.
export PATH := $(BIN):$(PATH)
export PREFECT_HOME ?= $(CURDIR)/.prefect
# The environment `uv sync` fills (its default is .venv, whatever --python says)
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
# Tools run with the project's environment defaults (telemetry off, quiet logs: stages/common/environment.py)
WITH_DEFAULTS := $(BIN)/python -m stages.common.environment

# The TensorFlow build (exclusive extras in uv.lock) and the DVC remote plugins stay as installed until named
# again: GPU=1 for tensorflow[and-cuda], GPU=0 for tensorflow-cpu (the first install's default); EXTRAS="s3 ssh"
# (s3, ssh, gs, azure), EXTRAS= for none. $(VENV)/.build records them (.installed-gpu: an older Makefile's GPU=1).
INSTALLED := $(or $(shell cat $(VENV)/.build 2>/dev/null),$(if $(wildcard $(VENV)/.installed-gpu),gpu))
$(if $(filter-out 0 1,$(GPU)),$(error GPU=$(GPU): GPU=1 installs the gpu TensorFlow build, GPU=0 the cpu one))
TF_BUILD := $(if $(filter 1,$(GPU)),gpu,$(if $(filter 0,$(GPU)),cpu,$(or $(firstword $(INSTALLED)),cpu)))
EXTRAS ?= $(wordlist 2,99,$(INSTALLED))
BUILD := $(strip $(TF_BUILD) $(sort $(EXTRAS)))
UV_VERSION := 0.13.9
# Test workers: one per core and one more, which takes the CPU a test leaves idle while it waits on a server, a
# schedule or a kill (docs/architecture.md)
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) + 1 )))

.PHONY: install lock run estimate stop test check ui bench docs plots clean FORCE

install: $(VENV)/.installed
ifeq ($(TF_BUILD),gpu)
	@nvidia-smi >/dev/null 2>&1 || echo "warning: no CUDA GPU here (nvidia-smi failed): the gpu TensorFlow build \
	will run on the CPU; make install GPU=0 switches back to the cpu build"
endif

# Exactly the locked set (uv.lock); --locked fails when pyproject.toml and the lock disagree (`make lock`).
$(VENV)/.installed: $(VENV)/.python $(VENV)/.build pyproject.toml uv.lock
	rm -f $@ $(VENV)/.installed-*
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv sync --locked --compile-bytecode --python $(BIN)/python $(addprefix --extra ,$(BUILD) dev)
	test -d .dvc || $(BIN)/dvc init --quiet
# git hooks from the default venv only: .pre-commit-config.yaml runs .venv's tools
ifeq ($(VENV),.venv)
	test ! -d .git || $(BIN)/pre-commit install --install-hooks >/dev/null
endif
	touch $@

# The venv, made or remade with a supported Python: PYTHON= or the newest on the PATH make was called with
$(VENV)/.python: FORCE
	@PATH="$(USER_PATH)" scripts/find-python.sh --venv $(VENV) $(PYTHON)

$(VENV)/.build: $(VENV)/.python FORCE
	@test "$$(cat $@ 2>/dev/null)" = "$(BUILD)" || echo "$(BUILD)" >$@

# uv.lock again after pyproject.toml changed; upgrades: ARGS="--upgrade-package NAME" or ARGS=--upgrade. Then
# `make install`, and commit uv.lock.
lock: $(VENV)/.python
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv lock $(ARGS)

# Against the project's local Prefect server, started by the first run and reused (`make stop` ends it), or the
# one PREFECT_API_URL names. PROFILE=full: fast.ai's full size (profiles/full.yaml) as a DVC experiment.
run: install
ifdef PROFILE
	$(BIN)/python -m pipelines.flow --profile $(PROFILE)
else
	api=$${PREFECT_API_URL:-$$($(BIN)/python -m pipelines.server url)} && \
	PREFECT_API_URL=$$api $(BIN)/python -m pipelines.flow
endif

# What `make run` (PROFILE=...: that profile) would run and how long it would take on this machine, measured for a
# few seconds first (pipelines/estimate.py); nothing runs
estimate: install
	$(BIN)/python -m pipelines.flow --dry-run $(if $(PROFILE),--profile $(PROFILE))

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

# MLflow 3.17's UI opens every experiment as GenAI unless told otherwise (scripts/check_mlflow_ui.py);
# UI_PORT=5001 when 5000 is taken
UI_PORT ?= 5000
ui: install
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db $(BIN)/python -m stages.common.tracking_store
	@echo "open http://127.0.0.1:$(UI_PORT)/#/experiments?workflowType=machine_learning (the runs tables, not GenAI's)"
	$(WITH_DEFAULTS) mlflow ui --host 127.0.0.1 --port $(UI_PORT) --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

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

# Removes the environment, which `make install` rebuilds: the venv with its install markers and recorded TensorFlow
# build and extras (the next install is cpu again). Data, DVC's cache, mlflow.db and .prefect stay.
clean:
	rm -rf $(VENV)

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
