# The two commands of the README: `make run` (dashboard on the embedded organism) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test typecheck bench

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and alone: the pinned CPU build is on disk; an unpinned torch pulls CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	# Atlas itself, editable: the `atlas` command, and `core`/`app` importable from anywhere.
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(PY) -m streamlit run app/main.py

test: $(STAMP)
	$(PY) -m pytest

# mypy over core/ and app/ at the strictness in pyproject.toml [tool.mypy] (CI runs it before `make test`).
typecheck: $(STAMP)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m bench
