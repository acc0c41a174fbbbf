# Everything runs inside .venv, created from requirements.lock (pinned, Python 3.11, pip only).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export OUTDATED_IGNORE := 1

.PHONY: venv test test-slow demo lint leaderboard bench claims clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# --durations=25: every change sees what its tests cost.
# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
# TEST_WORKERS: pytest-xdist processes (one per core of the 2-core CI machine); test files
# stay whole on one worker (--dist loadfile) so module fixtures are built once. 0 = serial.
TEST_WORKERS ?= 2
test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

test-slow: venv
	$(PY) -m pytest -q -m slow

lint: venv
	$(PY) -m ruff check .

# The main job: a sweep over seeds and two methods on the embedded maze benchmark, then
# the leaderboard.
DEMO_SEEDS ?= 0,1,2
DEMO_METHODS ?= erm,label_smoothing
# the terminal gets warnings only (each run's full log stays in its Hydra job folder), then
# the headline per dataset, the page's path and the time taken
DEMO_QUIET ?= +hydra.job_logging.handlers.console.level=WARNING
demo: venv
	@start=$$(date +%s); \
	$(PY) -m harness.run -m seed=$(DEMO_SEEDS) method=$(DEMO_METHODS) $(DEMO_QUIET) $(DEMO_ARGS) && \
	$(PY) -m harness.run ensemble=seeds 'ensemble.seeds=[$(DEMO_SEEDS)]' $(DEMO_QUIET) $(DEMO_ARGS) && \
	$(PY) -m harness.leaderboard && \
	echo "runs:        results/runs/ (one directory per run; rerunning skips finished ones)" && \
	echo "demo took:   $$(( $$(date +%s) - start )) s"

leaderboard: venv
	$(PY) -m harness.leaderboard

# The claims suite (docs/claims.md): every preset of conf/experiment/claims/ swept (finished
# runs skipped) under results/claims/, its decision rule applied, docs/claims.md rewritten.
# About an hour on two CPU cores; CLAIMS_ARGS e.g. 'names=[msp_failure_detection]' or run=false.
claims: venv
	nice -n 10 $(PY) -m harness.claims $(CLAIMS_ARGS)

# Speed measurements (ratios; not part of `make test`). Numbers go to docs/benchmarks.md.
bench: venv
	$(PY) benchmarks/eval_throughput.py
	$(PY) benchmarks/many_models.py
	$(PY) benchmarks/features_fp16.py
	$(PY) benchmarks/posthoc_cost.py
	$(PY) benchmarks/sweep_overhead.py
	$(PY) benchmarks/leaderboard_regen.py
	$(PY) benchmarks/many_splits_memory.py
	$(PY) benchmarks/digest_overhead.py

clean:
	rm -rf results/runs results/cache results/multirun results/table.* results/leaderboard
