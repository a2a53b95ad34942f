# `make demo` and `make test` set everything up from a fresh clone (a .venv in this folder).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: setup
	$(BIN)/python end_to_end.py

# two workers of one thread each (tests/conftest.py): the suite is mostly single-threaded Python
test: setup
	$(BIN)/python -m pytest -q -n 2
