# zarrseg: two commands do everything on a fresh machine with Python >= 3.11 and pip.
#   make run   create .venv, install, run the default workflow on the embedded sample
#   make test  create .venv, install, run the test suite
# The install step is skipped when .venv is newer than pyproject.toml (a second call reinstalls nothing).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Rules call the `zarrseg` console script: put the venv first on PATH for Snakemake's jobs.
export PATH := $(abspath $(BIN)):$(PATH)
CORES ?= 2
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test install lint docs dry-run slurm-dry-run report clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: install
	$(BIN)/snakemake --snakefile workflow/Snakefile --profile profiles/local --cores $(CORES) $(SNAKEMAKE_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks workflow

docs: install  ## regenerate config/schema.yaml and the README parameter reference from the dataclasses
	$(BIN)/python -m zarrseg.schema --write

dry-run: install  ## what the local profile would run
	$(BIN)/snakemake --snakefile workflow/Snakefile --profile profiles/local -n

slurm-dry-run: install  ## what the SLURM profile would submit
	$(BIN)/snakemake --snakefile workflow/Snakefile --profile profiles/slurm -n

report: install
	$(BIN)/snakemake --snakefile workflow/Snakefile --profile profiles/local --report results/report.html

clean:
	rm -rf results .snakemake
