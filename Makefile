# The two commands of the README: `make book` and `make test`. Both set up .venv from the pins.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= default
ARGS    ?=

.PHONY: book test pytest chapters html venv clean clean-cache

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade "pip>=24"
	$(PY) -m pip install -qq -r requirements.txt -c constraints.txt
	$(PY) -m pip install -qq --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

## make book: execute every chapter with papermill under PROFILE (default), with the runner's ARGS
## (e.g. ARGS="-p authors_codessm codessm.pth"); the runner then builds the HTML.
book: venv
	$(PY) -m analysis.book run --profile $(PROFILE) $(ARGS)

## make test: the pytest suite, then every chapter under the smoke profile, then the HTML.
test: venv
	$(PY) -m pytest -q -m "not browser"
	$(PY) -m analysis.book run --profile smoke --no-html
	$(PY) -m analysis.book html --strict
	$(PY) -m pytest -q -m browser

clean:
	rm -rf _build book/*.ipynb

clean-cache:
	rm -rf .cache/analysis
