# Two entry points for a newcomer (README "Quick start"); everything else is plain dvc.
VENV ?= .venv
SETUP_STAMP := $(VENV)/.setup-done
# Stage commands call `python`: it must be the environment's.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test lint
setup: $(SETUP_STAMP)

$(SETUP_STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@bash scripts/setup_venv.sh $(VENV)
	@touch $@

repro: setup
	dvc repro

test: setup
	pytest -q

lint: setup
	ruff check src tests scripts benchmarks
