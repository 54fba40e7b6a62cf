# Set-up is part of every target: a missing .venv is created and the pinned dependencies installed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TB_PORT ?= 6006

.PHONY: demo test test-slow bench tensorboard clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)  ## two moons with model.fit; TensorBoard logs in tensorboard_logs/moons
	$(PY) examples/moons.py

test: $(STAMP)  ## the default (fast) test suite, in two processes (pytest-xdist), one test file each at a time
	$(PY) -m pytest -q -n 2 --dist loadfile

test-slow: $(STAMP)  ## end-to-end example fits
	$(PY) -m pytest -q -m slow

bench: $(STAMP)  ## speed/memory benchmarks vs Keras and tfp.layers -> benchmarks/RESULTS.md
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) -m benchmarks.run

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir tensorboard_logs --host 127.0.0.1 --port $(TB_PORT)

clean:
	rm -rf outputs .pytest_cache
