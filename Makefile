# The two commands that do everything on a fresh machine: `make demo` and `make test`. Afterwards
# `.venv/bin/nlbench` (or `source .venv/bin/activate`, then `nlbench`) is the command line.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines get the pinned CPU wheel first so that pip never pulls CUDA packages; set
# TORCH_SPEC= (empty) to keep a CUDA torch that is already installed in the environment.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install browser demo examples reference-logs smoke-baseline smoke-spread test test-all clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(BIN)/python -m pip install -q "$(TORCH_SPEC)")
	$(BIN)/python -m pip install -q -e ".[test,tensorboard]"
	touch $(STAMP)

install: $(STAMP)

# A headless browser for the HTML report's test (tests/report/test_report_html.py): Debian's chromium, where
# apt is there and we are root; anywhere else this says so and the browser test skips (under CI=true, a
# failure: tests/ci_gate.py). Never fails itself.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		echo "browser: $$(command -v chromium || command -v chromium-browser)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
			>/dev/null) || echo "browser: apt-get could not install chromium; the browser test will skip (a failure under CI=true)"; \
	else \
		echo "browser: no chromium and no apt-get as root; the browser test will skip (a failure under CI=true)"; \
	fi

# Runs the main job on the embedded defaults: synthetic datasets, smoke profile, local launcher. Everything
# it writes goes to DEMO_RESULTS, which git ignores: the checkout stays clean (records say git_dirty: false).
DEMO_RESULTS ?= results/demo-run
demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" NLBENCH_DEMO_RESULTS="$(DEMO_RESULTS)" bash scripts/demo.sh

# The committed example outputs, from one demo run into results/demo: the README's tables (between its
# nlbench:tables markers), results/demo/{summary.csv,tables.md,compare.md} and the two figures the README
# shows, then docs/images/report_index.png (the report's first page in headless chromium, where there is
# one: `make browser`). Run it, and commit what it changed, after a change that moves the smoke numbers.
examples: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" NLBENCH_DEMO_RESULTS=results/demo NLBENCH_DEMO_README=README.md bash scripts/demo.sh
	$(BIN)/python scripts/report_screenshot.py results/demo/report/index.html docs/images/report_index.png

# The smoke reference logs, frozen from one smoke run-all of every row into REFERENCE_RUN (rows already
# done there are not run again): each row's train.log.json as results/reference/logs/smoke/<recipe>.log.json
# (docs/CURVES.md). The smoke baseline results/reference/smoke.csv is the mean of a measured spread, not of
# this one run, so it is left alone; only with SPREAD=FILE given explicitly is it re-frozen from FILE
# (smoke-baseline). The default folder is written by this target alone.
REFERENCE_RUN ?= results/reference-run
reference-logs: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" nlbench run-all --profile smoke --launcher local --parallel 2 --results $(REFERENCE_RUN)
	$(BIN)/python -m benchmark.report.freeze logs '$(REFERENCE_RUN)'
	$(if $(filter file undefined,$(origin SPREAD)),@echo "reference-logs: smoke baseline left as it is (SPREAD=FILE re-freezes it)",$(MAKE) smoke-baseline SPREAD='$(SPREAD)')

# The smoke baseline re-frozen from a spread file (one line per run of a row at a seed, thread count,
# instruction set and processor; format: benchmark/report/spread.py): each row's mean and its measured
# band, written to SMOKE_BASELINE, and the spread copied beside it as smoke_spread.csv (the committed
# baseline's source data: results/reference/smoke_spread.csv).
SPREAD ?= results/reference/smoke_spread.csv
SMOKE_BASELINE ?= results/reference/smoke.csv
smoke-baseline: $(STAMP)
	$(BIN)/python -m benchmark.report.freeze baseline '$(SPREAD)' '$(SMOKE_BASELINE)'

# The smoke spread measured on this machine (scripts/smoke_spread.py --cells full) and added to SPREAD
# (default: the committed spread, whose lines of other processors are kept, so the baseline widens to
# this machine; its lines of an earlier smoke configuration are dropped): every row at seeds 0-4, 1 and 2
# threads, natively and under a second instruction-set cap (AVX2 where the CPU has AVX-512, else SSE4.1),
# each (cap, threads) one smoke run-all into SPREAD_RUN/<cap>-t<threads> (rows done there are not run
# again); the committed spread's table in docs/SMOKE.md too. Long: 20 smoke runs of every row
# (SPREAD_FILTER: a glob on recipe names). On a new kind of machine, or after a smoke profile change:
#   make smoke-spread smoke-baseline
SPREAD_RUN ?= results/spread-run
smoke-spread: $(STAMP)
	$(BIN)/python scripts/smoke_spread.py --cells full --work '$(SPREAD_RUN)' --out '$(SPREAD)' \
		$(if $(filter file undefined,$(origin SPREAD)),--table docs/SMOKE.md) \
		$(if $(SPREAD_FILTER),--filter '$(SPREAD_FILTER)')

# The code's own checks first (import layers, lint), then the suite.
test: $(STAMP) browser
	$(BIN)/lint-imports
	$(BIN)/ruff check benchmark tests
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) results/work results/jobs results/records results/reference-run results/spread-run results/smoke-spread results/demo/records results/demo/work results/demo/jobs $(DEMO_RESULTS) data/synthetic
