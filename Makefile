# costmodels: two commands on a fresh machine (`make demo`, `make test`); each installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/costmodels
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[tvm,gnn,dev]'
	@# a half-extracted apache-tvm-ffi (no compiled core) was seen once: check, repair once
	$(PY) -c "import tvm" 2>/dev/null || $(PY) -m pip install --disable-pip-version-check -q \
		--force-reinstall --no-deps "apache-tvm-ffi==0.1.14.post1"
	$(PY) -c "import tvm, onnxruntime, xgboost, torch"
	touch $(STAMP)

demo: install            ## measure a NAS-Bench-201 sample here, build LUT, fit, compare -> report/
	$(CLI) demo --out report

test: install            ## the whole suite, slow tests in their short form
	$(PY) -m pytest -q

bench: install           ## query cost, measurement quality, few-shot curves -> bench/results.md
	$(PY) bench/run.py --out bench/results.md

lint: install
	$(PY) -m ruff check costmodels measure analytical predictors tests bench

clean:
	rm -rf $(VENV) report *.egg-info
