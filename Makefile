# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench clean

$(STAMP): pyproject.toml constraints-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints-ci.txt -e '.[dev]'
	touch $(STAMP)

# --overwrite replaces an earlier demo (only ever a directory optsde wrote itself).
demo: $(STAMP)
	$(BIN)/optsde demo --out runs/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

bench: $(STAMP)
	$(BIN)/optsde bench

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
