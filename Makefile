# The two set-up commands of the README: `make run` and `make test`.
# Each creates .venv on first use; a second call reinstalls nothing unless pyproject.toml or
# constraints.txt changed.
# `make run CONFIG=config/pretrain_check.yaml` runs another config; every config writes to its own
# results folder (results/<config file stem>, or the config's results_dir).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BYTECODE := $(VENV)/.bytecode
CORES ?= all
CONFIG ?= config/config.yaml
# The folder CONFIG writes to (evaluated when a recipe runs, once the venv exists).
RESULTS_DIR = $$($(VENV)/bin/python -m opera.preflight results-dir $(CONFIG))

.PHONY: run test test-fast test-slurm lint report check-reference clean-results

# --no-compile: pip would byte-compile every module of every package (88 s of a 2-core machine's
# install); $(BYTECODE) compiles the ones jobs and tests import instead (about 15 s, once).
# -c constraints.txt: the exact tested versions (pyproject.toml itself declares compatible ranges).
$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --no-compile -c constraints.txt -e '.[test,lint]'
	touch $@

# Bytecode for what jobs and tests import, written once (tools/warm_bytecode.py says why: where
# PYTHONDONTWRITEBYTECODE is set, every job and test process compiled torch and its kin again).
$(BYTECODE): $(STAMP) tools/warm_bytecode.py
	PYTHONDONTWRITEBYTECODE= $(VENV)/bin/python tools/warm_bytecode.py
	touch $@

run: $(BYTECODE)
	$(VENV)/bin/snakemake --profile profiles/local --cores $(CORES) --configfile $(CONFIG)
	$(MAKE) --no-print-directory report CONFIG=$(CONFIG)

# Snakemake's HTML report of a finished run: results/config/report.html for the default.
report: $(BYTECODE)
	$(VENV)/bin/snakemake --cores 1 --configfile $(CONFIG) --report "$(RESULTS_DIR)/report.html"

# The default's metrics against the committed reference of the precision they ran at
# (results/reference/ for bf16, results/reference/fp32/), within opera.report.reference.TOLERANCES.
check-reference: $(BYTECODE)
	$(VENV)/bin/python -m opera.report.reference "$(RESULTS_DIR)"

# Two workers (pytest-xdist); the workflow fixtures are built once and shared by both
# (tests/workflow_helpers.py built_once).
test: $(BYTECODE)
	$(VENV)/bin/python -m pytest -q -n 2

# While editing: the tests that neither train, nor run a stage, a subprocess or Snakemake (markers
# slow and workflow; tests/conftest.py marks the users of the stage fixtures). CI runs `make test`.
test-fast: $(BYTECODE)
	$(VENV)/bin/python -m pytest -q -n 2 -m "not slow and not workflow and not slurm"

# The smoke config through a one-node SLURM that the test starts and stops (tools/local_slurm.sh).
test-slurm: $(BYTECODE)
	$(VENV)/bin/python -m pytest -q -m slurm

# The linters CI runs before the tests (versions pinned in pyproject.toml's `lint` extra).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakefmt --check Snakefile rules/
	$(VENV)/bin/python .ci/lint_workflow.py

# Deletes everything CONFIG wrote, only if its results folder's owner.json names CONFIG (never
# results/reference/ or the checkout: no config may write there).
clean-results: $(STAMP)
	$(VENV)/bin/python -m opera.preflight clean $(CONFIG)
