# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create .venv and install pinned dependencies once; re-runs only redo changed steps.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.effnet-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-all bench clean

install: $(STAMP)

$(STAMP): requirements.lock requirements-nodeps.txt requirements-tflite.txt requirements-executorch.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps -r requirements-nodeps.txt
	$(PIP) install --no-deps -r requirements-tflite.txt
	$(PIP) install --no-deps -r requirements-executorch.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: install
	$(VENV)/bin/effnet predict examples/images/cat.jpg examples/images/espresso.jpg

# pytest exits 5 when it collected no tests: that must fail, never pass silently.
test: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

test-all: install
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-all: no tests were collected" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
