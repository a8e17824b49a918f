# legato: the two Quick-start commands.
#   make run   - set up .venv, pull data/ and the published artifacts from the in-repo DVC remote, recreate their
#                MLflow runs and registry, regenerate the stamp sets (dvc repro), check dvc status, say where things are
#   make recompute - the whole pipeline from scratch (dvc repro --force; the production estimator stays published)
#   make test  - set up .venv, fetch data/, lint (ruff, the import-layer contract), run the whole test suite (slow tests too;
#                the toy-pipeline test in a second pytest beside the rest)
#   make lint  - ruff check, ruff format --check and lint-imports (the layer contract of docs/architecture.md)
#   make test-fast - the suite without the slow end-to-end tests (what a bare `pytest` runs)
#   make paper - the pipeline at the paper's training length (15 epochs), as a DVC experiment
#   make production - retrain the production estimator (hours; resumable: rerun to continue), then record it in dvc.lock
#   make lock  - re-resolve requirements.lock from pyproject.toml (keeps current pins; UPGRADE=--upgrade to move them)
PYTHON ?= python3
LOCK := requirements.lock
UV_VERSION := 0.13.9
UPGRADE ?=
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MPLBACKEND := Agg

.PHONY: run test test-fast lint data published install clean paper production lock recompute

# exact versions and hashes from the lock (main and test dependencies), then legato itself without resolving anything
$(INSTALLED): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(INSTALLED)

lock: $(INSTALLED)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 $(UPGRADE) -o $(LOCK)

install: $(INSTALLED)

data: $(INSTALLED)
	$(BIN)/dvc pull --quiet data.dvc
	$(BIN)/dvc pull --quiet train_production
	$(BIN)/dvc pull --quiet train_scenes
	$(BIN)/dvc pull --quiet export_history   # mlflow_history: tests/test_tracking_server.py imports it onto PostgreSQL

published: data
	$(BIN)/dvc pull --quiet --allow-missing

run: published
	$(BIN)/legato history import mlflow_history
	$(BIN)/dvc repro
	$(BIN)/dvc status
	$(BIN)/legato where

recompute: data
	rm -rf datasets/classical datasets/realistic/labels   # persisted fits would otherwise be resumed, not redone
	$(BIN)/dvc repro --force
	$(BIN)/dvc status
	$(BIN)/legato where

paper: data
	$(BIN)/dvc exp run --name paper-scale -S train.epochs=15 -S train.patience=4

production: data
	$(BIN)/dvc repro simulate_noiseless
	$(BIN)/legato train-production --params params.yaml --data datasets/noiseless --checkpoint checkpoints/production --out models/production --report reports/train_production.json
	$(BIN)/dvc commit --force train_production

lint: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs
	$(BIN)/lint-imports

# the toy pipeline's `dvc repro` (a third of the suite's time, a chain of short processes that leaves a core idle
# most of the time) runs beside the rest of the suite in a pytest of its own; its report follows the suite's
test: data lint
	@e2e=$$(mktemp -d); \
	$(BIN)/python -m pytest -m "slow or not slow" -p no:cacheprovider --basetemp=$$e2e/tmp tests/test_pipeline_e2e.py > $$e2e/log 2>&1 & \
	pid=$$!; \
	$(BIN)/python -m pytest -m "slow or not slow" --ignore=tests/test_pipeline_e2e.py; rest=$$?; \
	wait $$pid; pipeline=$$?; \
	echo "--- tests/test_pipeline_e2e.py (run beside the suite above):"; cat $$e2e/log; rm -rf $$e2e; \
	test $$rest -eq 0 && test $$pipeline -eq 0

test-fast: data
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) datasets
