# The two quick-start commands: `make demo` (the default job end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default

.PHONY: install demo test lint bench
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: install
	$(PY) main.py --config=configs/default.py --workdir=$(WORKDIR)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check --select F,E9 --line-length 110 .

bench: install
	$(VENV)/bin/pip install -q -r bench/requirements.txt
	$(PY) -m bench.compare
