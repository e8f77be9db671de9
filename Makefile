# The README's two commands: `make run` (the embedded default, end to end) and
# `make test` (the test suite). Both set up .venv first (CPU torch from the
# pinned 2.13.0 build; an unpinned torch would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SNAKEMAKE := $(BIN)/snakemake

.PHONY: setup run test lint format dryrun-paper report readme-figures

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(SNAKEMAKE) --profile profiles/local all

test: setup
	$(BIN)/python -m pytest -q -ra

lint: setup
	$(BIN)/ruff check src tests bench workflow/scripts
	$(BIN)/ruff format --check src tests bench workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(SNAKEMAKE) --lint

format: setup
	$(BIN)/ruff check --fix src tests bench workflow/scripts
	$(BIN)/ruff format src tests bench workflow/scripts
	$(BIN)/snakefmt Snakefile workflow/rules

dryrun-paper: setup
	$(SNAKEMAKE) --profile profiles/slurm all -n --configfile config/paper.yaml

report: setup
	$(SNAKEMAKE) --profile profiles/local --report results/report.zip all

# The README's figures: the embedded run's main figures, downscaled, in docs/figures/.
README_FIGURES := fig1_classes fig1_categories fig2_sae_density fig3_ablation table1
readme-figures: setup
	$(SNAKEMAKE) --profile profiles/local $(README_FIGURES:%=results/toy/figures/%.png)
	$(BIN)/python -m lorascope.figures.readme results/toy/figures docs/figures $(README_FIGURES)
