# The two set-up commands of the README: `make run` and `make test`.
# Each creates .venv on first use; a second call reinstalls nothing unless pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: run test lint report clean-results

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test,lint]'
	touch $@

run: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config/config.yaml
	$(VENV)/bin/snakemake --cores 1 --configfile config/config.yaml --report results/report.html

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# The linters CI runs before the tests (versions pinned in pyproject.toml's `lint` extra).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakefmt --check Snakefile rules/
	$(VENV)/bin/python .ci/lint_workflow.py

clean-results:
	rm -rf results/data results/score results/prune results/finetune results/finetune_work \
	       results/index results/evaluate results/tables results/plots logs benchmarks
