# The two commands of the README: `make book` and `make test`. Both set up .venv from the pins.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= default
# MathJax 3, served with the book (math renders with no network): fetched once from the npm
# registry into .cache/npm, its parts the pages use copied into _static/mathjax (git-ignored).
NPM ?= npm
MATHJAX_VERSION := 3.2.2
MATHJAX_TGZ := .cache/npm/mathjax-$(MATHJAX_VERSION).tgz
MATHJAX := _static/mathjax/tex-mml-chtml.js
ARGS    ?=

.PHONY: book test pytest chapters html venv mathjax clean clean-cache reproducible reproducible-check

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade "pip>=24"
	$(PY) -m pip install -qq -r requirements.txt -c constraints.txt
	$(PY) -m pip install -qq --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

$(MATHJAX_TGZ):
	@command -v $(NPM) >/dev/null 2>&1 || { echo "error: npm is needed once, to fetch MathJax $(MATHJAX_VERSION) from the npm registry for the HTML book (install Node.js/npm, e.g. apt-get install npm, or set NPM=/path/to/npm)" >&2; exit 1; }
	mkdir -p $(@D)
	cd $(@D) && $(NPM) pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	test -s $@

$(MATHJAX): $(MATHJAX_TGZ)
	rm -rf _static/mathjax .cache/npm/mathjax && mkdir -p _static/mathjax/output .cache/npm/mathjax
	tar -xzf $< -C .cache/npm/mathjax
	cd .cache/npm/mathjax/package && cp LICENSE es5/tex-mml-chtml.js $(CURDIR)/_static/mathjax/ && \
		cp -r es5/input es5/ui es5/a11y $(CURDIR)/_static/mathjax/ && cp -r es5/output/chtml $(CURDIR)/_static/mathjax/output/
	rm -rf .cache/npm/mathjax
	touch $@

mathjax: $(MATHJAX)

## make book: execute every chapter with papermill under PROFILE (default), with the runner's ARGS
## (e.g. ARGS="-p authors_codessm codessm.pth"); the runner then builds the HTML.
book: venv mathjax
	$(PY) -m analysis.book run --profile $(PROFILE) $(ARGS)

## make test: the pytest suite, then every chapter under the smoke profile, then the HTML, then
## the ledger chapters once more on one worker into an empty cache: the same ledger numbers.
test: venv mathjax
	$(PY) -m pytest -q -m "not browser"
	$(PY) -m analysis.book run --profile smoke --no-html
	$(PY) -m analysis.book html --strict
	$(PY) -m pytest -q -m browser
	$(MAKE) reproducible-check

## make reproducible: the chapters that write the ledger, under the smoke profile, twice into empty
## caches (ANALYSIS_WORKERS=1, then 2); the two ledgers must hold the same numbers.
REPRO := $(CURDIR)/_build/reproducible
reproducible: venv
	rm -rf $(REPRO)
	for w in 1 2; do ANALYSIS_WORKERS=$$w ANALYSIS_CACHE=$(REPRO)/cache$$w ANALYSIS_RUN_DIR=$(REPRO)/run$$w \
		$(PY) -m analysis.book run --profile smoke --no-html --only 03 04 05 06 || exit 1; done
	REPRODUCE_LEDGERS=$(REPRO)/run1,$(REPRO)/run2 $(PY) -m pytest -q tests/test_determinism.py -k ledger

## after make test: the smoke book it just built (the default pool of workers, an
## empty cache on a clean clone) against the ledger chapters once more, one worker, an empty cache.
reproducible-check: venv
	rm -rf $(REPRO)
	ANALYSIS_WORKERS=1 ANALYSIS_CACHE=$(REPRO)/cache1 ANALYSIS_RUN_DIR=$(REPRO)/run1 \
		$(PY) -m analysis.book run --profile smoke --no-html --only 03 04 05 06
	REPRODUCE_LEDGERS=$(CURDIR)/_build/run,$(REPRO)/run1 $(PY) -m pytest -q tests/test_determinism.py -k ledger

clean:
	rm -rf _build book/*.ipynb

clean-cache:
	rm -rf .cache/analysis
