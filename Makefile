# The two commands of the README: `make demo` and `make test`.
# Each creates or updates the project's virtual environment (.venv) first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever pyproject.toml or this Makefile changes.
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,real]'
	# facenet-pytorch pins an old torch: take only its code and MTCNN weights.
	$(BIN)/python -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	$(BIN)/python -m erasablemask.platform.setup_assets
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/erasablemask demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
