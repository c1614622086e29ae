# The two quick-start commands: `make demo` (the default job end to end) and `make test`.
# `make install ACCEL=cuda13` (NVIDIA GPUs) or `ACCEL=tpu` (TPU VMs) installs the matching JAX.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
ACCEL ?= cpu
ifeq ($(filter $(ACCEL),cpu cuda13 tpu),)
$(error ACCEL=$(ACCEL): must be cpu, cuda13 or tpu)
endif
EXTRAS := $(if $(filter cpu,$(ACCEL)),,[$(ACCEL)])

.PHONY: install demo test test-fast lint bench
install: $(VENV)/.installed-$(ACCEL)

$(VENV)/.installed-$(ACCEL): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q -e ".$(EXTRAS)"
	touch $@

demo: install
	$(PY) main.py --config=configs/default.py --workdir=$(WORKDIR)

test: install  # two workers: the tests wait on their main.py processes and on single-threaded compiles
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: install  # a loop of about a minute and a half: the tests not marked slow, on two workers
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

lint: install
	$(VENV)/bin/ruff check --select F,E9 --line-length 110 .

bench: install
	$(VENV)/bin/pip install -q -r bench/requirements.txt
	$(PY) -m bench.compare
