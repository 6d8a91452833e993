# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo       creates .venv, installs, prepares the digit dataset, trains the baseline and
#                   DEMO_METHOD at known proportions 0.1/0.3 and prints their mAP and the gain
#   make test       creates .venv, installs, runs the whole test suite (CI runs this)
# and one more reproduces docs/results/digit_methods (see there for its wall time on 2 CPU cores):
#   make benchmark  every method at p = 0.1/0.3/0.5 over 3 seeds, the baseline also at p = 1.0
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
comma := ,
DATA_DIR ?= $(CURDIR)/data/tfds
WORKDIR ?= $(CURDIR)/workdirs/demo
BENCHMARK_DIR ?= $(CURDIR)/workdirs/digit_benchmark
DEMO_METHOD ?= hst
METHODS := baseline sst hst sarb dsrb satl satl_dsrb
# Pseudo-label counts (SST, HST), blending weights (SARB, DSRB), threshold quality (SATL)
DIAGNOSTICS := train/intra_pseudo_positives,train/intra_pseudo_true_positives
DIAGNOSTICS := $(DIAGNOSTICS),train/inter_pseudo_positives,train/inter_pseudo_true_positives
DIAGNOSTICS := $(DIAGNOSTICS),train/hidden_positives,train/alpha,train/beta
DIAGNOSTICS := $(DIAGNOSTICS),satl/positive_precision,satl/positive_recall
DIAGNOSTICS := $(DIAGNOSTICS),satl/negative_precision,satl/negative_recall
DIAGNOSTICS := $(DIAGNOSTICS),satl/premise_ks_positive_mean,satl/premise_ks_negative_mean
# pytest-xdist workers of `make test`; each test file runs whole in one worker (--dist loadfile),
# so module fixtures are built once, except the long parts tests/conftest.py's work_unit makes
# units of their own (each method's contract run, the notebook runs); the longest units are
# handed out first (--no-loadscope-reorder keeps conftest's order); both workers share the
# compilation cache
TEST_WORKERS ?= 2
export JAX_COMPILATION_CACHE_DIR ?= $(HOME)/.cache/mlrpl_jax/jax_compilation_cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0

.PHONY: install demo benchmark benchmark-regime test bench benchmark-step clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps mlcpl==0.1.7  # pyproject.toml's dev extra says why
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m mlrpl_jax.data.prepare --dataset=digit_scenes/small --data_dir=$(DATA_DIR)
	$(PY) -m mlrpl_jax.sweep --workdir=$(WORKDIR) \
		--configs=configs/baseline_digits.py,configs/$(DEMO_METHOD)_digits.py \
		--known_ratios=0.1,0.3 --seeds=0 --set=data.data_dir=$(DATA_DIR) \
		--set=eval.every_epochs=4 --set=logging.progress_bar=false

benchmark: install
	$(PY) -m mlrpl_jax.data.prepare --dataset=digit_scenes/small --data_dir=$(DATA_DIR)
	$(PY) -m mlrpl_jax.sweep --workdir=$(BENCHMARK_DIR) \
		--configs=$(subst $(eval) ,$(comma),$(foreach m,$(METHODS),configs/$(m)_digits.py)) \
		--known_ratios=0.1,0.3,0.5 --reference_only_ratios=1.0 --seeds=0,1,2 \
		--set=data.data_dir=$(DATA_DIR) --set=eval.every_epochs=4 \
		--set=logging.progress_bar=false --report_scalars=$(DIAGNOSTICS)

# The benchmark regime (docs/results/benchmark_regime.md): every method on digit_scenes/large
# (20,000 scenes, 4 epochs) with the whole backbone frozen and its maps cached (REGIME), at
# p = REGIME_RATIOS over REGIME_SEEDS, the baseline also at 1.0, paired 95 % intervals of each
# method's gain. REGIME=large trains the backbone's last stages as the papers do (~9x slower per
# step). On the 2-core CPU a cached run takes 1-2 min (8 seeds of 7 configs at p = 0.1: 80 min),
# so the full command (~170 runs) is a ~4-hour job there (benchmarks/regime_runs_per_hour.py).
REGIME ?= cached
REGIME_DIR ?= $(CURDIR)/workdirs/regime_$(REGIME)
REGIME_SEEDS ?= 0,1,2,3,4,5,6,7
REGIME_RATIOS ?= 0.1,0.3,0.5
benchmark-regime: install
	$(PY) -m mlrpl_jax.data.prepare --dataset=digit_scenes/large --data_dir=$(DATA_DIR)
	$(PY) -m mlrpl_jax.sweep --workdir=$(REGIME_DIR) \
		--configs=$(subst $(eval) ,$(comma),$(foreach m,$(METHODS),configs/$(m)_digits.py:$(REGIME))) \
		--known_ratios=$(REGIME_RATIOS) --reference_only_ratios=1.0 --seeds=$(REGIME_SEEDS) \
		--set=data.data_dir=$(DATA_DIR) --set=logging.progress_bar=false \
		--report_scalars=$(DIAGNOSTICS)

test: install
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

bench: install
	$(PY) benchmarks/train_step.py --config=configs/baseline_digits.py

# Every method at the paper configuration (ResNet-101, 448², batch 8, COCO's 80 classes): train
# step and inference forward, each in its own process (its own peak RSS), for each convolution
# variant conv_impl:frozen_dtype side by side; lines go to benchmarks/results/train_step.jsonl
# (docs/performance.md). Methods the PyTorch reference harness (benchmarks/reference_torch_step.py)
# implements are run there first, back to back with ours. benchmarks/train_step_table.py renders
# the lines. Narrow it with e.g. STEP_METHODS="sst sarb" STEP_VARIANTS=dot:float32.
STEP_METHODS ?= baseline sst hst sarb dsrb satl
STEP_VARIANTS ?= xla:float32 dot:float32 dot:bfloat16
STEP_REFERENCE_METHODS ?= sst sarb dsrb
STEP_STEPS ?= 3
benchmark-step: install
	for method in $(STEP_METHODS); do for mode in train_step eval_forward; do \
	  if echo " $(STEP_REFERENCE_METHODS) " | grep -q " $$method "; then \
	    $(PY) benchmarks/reference_torch_step.py --model=$$method --mode=$$mode \
	      --steps=$(STEP_STEPS) || exit 1; fi; \
	  for variant in $(STEP_VARIANTS); do \
	    JAX_ENABLE_COMPILATION_CACHE=false $(PY) benchmarks/train_step.py \
	      --config=configs/$${method}_coco.py --mode=$$mode \
	      --steps=$(STEP_STEPS) --config.model.conv_impl=$${variant%%:*} \
	      --config.model.frozen_dtype=$${variant##*:} || exit 1; \
	done; done; done

clean:
	rm -rf $(VENV) workdirs
