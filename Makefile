# legato: the two Quick-start commands.
#   make run   - set up .venv, fetch data/ from the in-repo DVC remote, run the pipeline (dvc repro)
#   make test  - set up .venv, fetch data/, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MPLBACKEND := Agg

.PHONY: run test data install clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(INSTALLED)

install: $(INSTALLED)

data: $(INSTALLED)
	$(BIN)/dvc pull --quiet data.dvc

run: data
	$(BIN)/dvc repro
	$(BIN)/dvc status

test: data
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) datasets
