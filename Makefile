# Two commands do all the set-up on a fresh machine (Python >= 3.10):
#   make course   installs into .venv and opens the course in JupyterLab
#   make test     installs into .venv and runs every test, notebooks included
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
NBGRADER_SERVER = $(addprefix nbgrader.server_extensions.,assignment_list course_list formgrader validate_assignment)
# JupyterLab refuses to run as root (containers, CI machines) unless told it may
JUPYTER_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: course test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@# the tests need nbgrader; learners need not see its menus (`make homework` turns them back on)
	$(BIN)/jupyter labextension disable --level=sys_prefix @jupyter/nbgrader >/dev/null 2>&1
	$(BIN)/jupyter server extension disable --sys-prefix $(NBGRADER_SERVER) >/dev/null 2>&1
	touch $@

# JupyterLab in the course environment: no "get notified about Jupyter news?" prompt, no news fetch or update
# check over the network (jupyter-config/README.md; tests/test_browser.py checks it)
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
LAB_SERVER_CONFIG := $(VENV)/etc/jupyter/jupyter_server_config.json

$(LAB_SETTINGS): jupyter-config/overrides.json | $(BIN)/.installed
	mkdir -p $(@D) && cp $< $@

$(LAB_SERVER_CONFIG): jupyter-config/jupyter_server_config.json | $(BIN)/.installed
	mkdir -p $(@D) && cp $< $@

install: $(BIN)/.installed $(LAB_SETTINGS) $(LAB_SERVER_CONFIG)

course: install
	$(BIN)/jupyter lab $(JUPYTER_FLAGS) notebooks/00_welcome.ipynb

test: install
	MAMLKIT_FAST=1 $(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=300 -p no:cacheprovider

clean:
	rm -rf $(VENV) runs .pytest_cache

# Lectures: `make slides` exports every notebook as reveal.js slides to _build/slides/ (one slide per
# #/## heading; SLIDES_FLAGS=--execute puts the outputs in), with local copies of reveal.js, MathJax,
# require.js and jQuery in _build/slides/_static/: the decks work offline. To present live: Alt+R in JupyterLab.
SLIDES_FLAGS ?=
.PHONY: slides site

slides: install
	$(BIN)/python course-src/slides.py $(SLIDES_FLAGS) --output-dir _build/slides notebooks/[0-9][0-9]_*.ipynb

# The course as a static web site (Jupyter Book 1, config in site/): every notebook executed in full
$(BIN)/.site-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[site]"
	touch $@

site: $(BIN)/.site-installed
	rm -rf _build/site && mkdir -p _build/site/notebooks _build/site/_mathjax
	cp site/*.yml site/*.md _build/site/
	@# MathJax from jupyter-server-mathjax, so the pages typeset their maths offline (site/_config.yml)
	cp -r "$$($(BIN)/python -c 'import jupyter_server_mathjax as m, os; print(os.path.dirname(m.__file__))')/static" \
		_build/site/_mathjax/mathjax
	cp notebooks/*.ipynb _build/site/notebooks/
	env -u MAMLKIT_FAST $(BIN)/jupyter-book build _build/site
	@echo "the course as a web site: $(CURDIR)/_build/site/_build/html/index.html"

# Homework: `make homework` writes the student version of every graded notebook (nbgrader removes the
# solutions and hidden tests) to homework/release/<assignment>/; see homework/README.md
ASSIGNMENTS = $(notdir $(wildcard homework/source/hw*))
.PHONY: homework

$(BIN)/.instructor-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[instructor]"
	touch $@

# nbgrader runs the `alembic` of its environment: the venv goes first on PATH
homework: $(BIN)/.instructor-installed
	$(BIN)/jupyter labextension enable --level=sys_prefix @jupyter/nbgrader >/dev/null 2>&1
	$(BIN)/jupyter server extension enable --sys-prefix $(NBGRADER_SERVER) >/dev/null 2>&1
	cd homework && for a in $(ASSIGNMENTS); do \
		PATH="$(abspath $(BIN)):$$PATH" nbgrader generate_assignment $$a --force --log-level=WARN || exit 1; done
	@echo "student versions (hand these out):" && ls -1 $(CURDIR)/homework/release/*/*.ipynb
