# The two commands of the README: `make book` and `make test`. Both set up .venv from the pins.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= default

.PHONY: book test pytest chapters html venv clean clean-cache reproducible

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade "pip>=24"
	$(PY) -m pip install -qq -r requirements.txt -c constraints.txt
	$(PY) -m pip install -qq --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

## make book: execute every chapter with papermill under PROFILE (default); the runner then builds the HTML.
book: venv
	$(PY) -m analysis.book run --profile $(PROFILE)

## make test: the pytest suite, then every chapter under the smoke profile, then the HTML.
test: venv
	$(PY) -m pytest -q -m "not browser"
	$(PY) -m analysis.book run --profile smoke --no-html
	$(PY) -m analysis.book html --strict
	$(PY) -m pytest -q -m browser

## make reproducible: the chapters that write the ledger, under the smoke profile, twice into empty
## caches (ANALYSIS_WORKERS=1, then 2); the two ledgers must hold the same numbers.
REPRO := $(CURDIR)/_build/reproducible
reproducible: venv
	rm -rf $(REPRO)
	for w in 1 2; do ANALYSIS_WORKERS=$$w ANALYSIS_CACHE=$(REPRO)/cache$$w ANALYSIS_RUN_DIR=$(REPRO)/run$$w \
		$(PY) -m analysis.book run --profile smoke --no-html --only 03 04 05 06 || exit 1; done
	REPRODUCE_LEDGERS=$(REPRO)/run1,$(REPRO)/run2 $(PY) -m pytest -q tests/test_determinism.py -k ledger

clean:
	rm -rf _build book/*.ipynb

clean-cache:
	rm -rf .cache/analysis
