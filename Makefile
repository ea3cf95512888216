# Two commands do all the set-up on a fresh machine (Python >= 3.10):
#   make course   installs into .venv and opens the course in JupyterLab
#   make test     installs into .venv and runs every test, notebooks included
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# JupyterLab refuses to run as root (containers, CI machines) unless told it may
JUPYTER_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: course test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

course: install
	$(BIN)/jupyter lab $(JUPYTER_FLAGS) notebooks/00_welcome.ipynb

test: install
	MAMLKIT_FAST=1 $(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=300 -p no:cacheprovider

clean:
	rm -rf $(VENV) runs .pytest_cache
