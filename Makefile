# Two entry points for a newcomer (README "Quick start"); everything else is plain dvc.
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-done

.PHONY: setup repro test lint
setup: $(SETUP_STAMP)

$(SETUP_STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@bash scripts/setup_venv.sh $(VENV)
	@touch $@

repro: setup
	$(VENV)/bin/dvc repro

test: setup
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests scripts benchmarks
