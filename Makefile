# plasticity_lab — `make help` lists the targets. Every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

# Real MNIST: use ../shared/data when it is there (developer machines and CI), else the loader's
# default (~/.cache/plasticity_lab, downloaded and md5-checked on first use).
ifeq ($(origin PLASTICITY_LAB_DATA), undefined)
  ifneq ($(wildcard ../shared/data/mnist/t10k-images-idx3-ubyte.gz),)
    export PLASTICITY_LAB_DATA := $(abspath ../shared/data)
  endif
endif

.DEFAULT_GOAL := help
.PHONY: help install train smoke test bench mutants analyze reproduce-list reproduction-report clean

help:  ## show this help
	@grep -E '^[a-zA-Z_%-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-19s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)   # CPU build first: the project's range then pulls no CUDA wheels
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install the project (torch $(TORCH_VERSION) CPU first)

train: install  ## train the default 3 x 100 relu net on online permuted MNIST (ARGS="learner=l2 ..." to override)
	$(PY) train.py $(ARGS)

smoke: install  ## a 2-task x 200-example run, to check an installation in seconds
	$(PY) train.py debug=smoke $(ARGS)

test: install  ## run the test suite
	$(PY) -m pytest -q $(ARGS)

mutants: install  ## plant small bugs in the learners (engine, kernel and reference) and check the learner tests catch each
	$(PY) scripts/mutants.py $(ARGS)

bench: install  ## engine speed vs a naive per-example nn.Module loop (prints steps/s and ratios)
	$(PY) -m plasticity_lab.bench $(ARGS)

analyze: install  ## report (tables + figures) for a sweep: make analyze SWEEP=multirun/2026-11-21/12-00-00-abc123
	@test -n "$(SWEEP)" || { echo "usage: make analyze SWEEP=<run or sweep folder(s)>"; exit 2; }
	$(PY) -m multirun_analysis report $(SWEEP) $(ARGS)

# The papers' experiments (multirun_analysis/reproduction/targets.py holds the one table of them).
SCALE ?= full
reproduce-%: install  ## run a paper's experiment into reproduction/<name>/ (SCALE=full|reduced|smoke; make reproduce-list)
	$(PY) -m plasticity_lab.reproduce run $* --scale $(SCALE) $(ARGS)

reproduce-list: install  ## the reproduction targets, most important first
	$(PY) -m plasticity_lab.reproduce list

reproduction-report: install  ## docs/REPRODUCTION.md and its figures from the runs under reproduction/
	$(PY) -m multirun_analysis reproduction reproduction --out docs $(ARGS)

clean:  ## remove caches (keeps outputs/ and multirun/)
	rm -rf .pytest_cache $(shell find . -name __pycache__ -not -path './$(VENV)/*')
