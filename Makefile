# Two entry points for a newcomer (README "Quick start"); everything else is plain dvc.
VENV ?= .venv
SETUP_STAMP := $(VENV)/.setup-done
# Stage commands call `python`: it must be the environment's.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test lint docs
setup: $(SETUP_STAMP)

$(SETUP_STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@bash scripts/setup_venv.sh $(VENV)
	@touch $@

repro: setup
	dvc repro

# ruff first (lint and format), then every test; pytest's exit status 5 (no tests collected) fails too.
test: lint
	pytest -q

lint: setup
	ruff check src tests scripts benchmarks docs
	ruff format --check src tests scripts benchmarks docs

# The documentation site into site/ (open site/index.html), warnings as errors; its reference pages are
# generated from the code (docs/reference_pages.py)
docs: setup
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict
