# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs, prepares the digit dataset, trains and evaluates the
#               baseline at known proportions 0.1/0.3/0.5 and prints the metrics table
#   make test   creates .venv, installs, runs the whole test suite (CI runs this)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= $(CURDIR)/data/tfds
WORKDIR ?= $(CURDIR)/workdirs/demo
export JAX_COMPILATION_CACHE_DIR ?= $(HOME)/.cache/mlrpl_jax/jax_compilation_cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m mlrpl_jax.data.prepare --dataset=digit_scenes --data_dir=$(DATA_DIR)
	$(PY) -m mlrpl_jax.sweep --config=configs/baseline_digits.py --workdir=$(WORKDIR) \
		--known_ratios=0.1,0.3,0.5 --seeds=0 --config.data.data_dir=$(DATA_DIR) \
		--config.eval.every_epochs=6

test: install
	$(PY) -m pytest -q --durations=15 tests

bench: install
	$(PY) benchmarks/train_step.py --config=configs/baseline_digits.py

clean:
	rm -rf $(VENV) workdirs
