# legato: the two Quick-start commands.
#   make run   - set up .venv, fetch data/ from the in-repo DVC remote, run the pipeline (dvc repro)
#   make test  - set up .venv, fetch data/, run the test suite
#   make paper - the pipeline at the paper's training length (15 epochs), as a DVC experiment
#   make production - retrain the production estimator (hours; resumable: rerun to continue), then record it in dvc.lock
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MPLBACKEND := Agg

.PHONY: run test data install clean paper production

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(INSTALLED)

install: $(INSTALLED)

data: $(INSTALLED)
	$(BIN)/dvc pull --quiet data.dvc
	$(BIN)/dvc pull --quiet train_production

run: data
	$(BIN)/dvc repro
	$(BIN)/dvc status

paper: data
	$(BIN)/dvc exp run --name paper-scale -S train.epochs=15 -S train.patience=4

production: data
	$(BIN)/dvc repro simulate_noiseless
	$(BIN)/legato train-production --params params.yaml --data datasets/noiseless --checkpoint checkpoints/production --out models/production --report reports/train_production.json
	$(BIN)/dvc commit --force train_production

test: data
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) datasets
