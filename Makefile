# Pulse: `make run` starts everything, `make test` runs the whole suite. Both create .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The benchmarks' competitors (Flower) live in their own virtualenv, never in the app's.
BENCH_VENV ?= .venv-bench
QUICK ?=
# `make soak`: seconds of load (an hour by default).
DURATION ?= 3600

.PHONY: run test lint chromium rabbitmq prometheus bench soak clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m pulse.devstack

# Browser tests need Debian's Chromium: installed here when we are root, else skipped with a hint.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make test: installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make test: /usr/bin/chromium is missing, so the browser tests will be skipped;"; \
	    echo "           install it with: sudo apt-get install chromium"; \
	  fi; \
	fi

# RabbitMQ tests need Debian's rabbitmq-server (started by the tests on free ports): installed here
# when we are root, else those tests are skipped with a hint (under CI=true they fail instead).
rabbitmq:
	@if [ ! -x /usr/sbin/rabbitmq-server ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make test: installing Debian's rabbitmq-server for the RabbitMQ tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null; \
	    service rabbitmq-server stop >/dev/null 2>&1 || true; \
	  else \
	    echo "make test: rabbitmq-server is missing, so the RabbitMQ tests will be skipped;"; \
	    echo "           install it with: sudo apt-get install rabbitmq-server"; \
	  fi; \
	fi

# The Prometheus rule tests need promtool, from Debian's prometheus package: installed here when we
# are root (its service stopped: the tests run no Prometheus), else those tests are skipped with a
# hint (under CI=true they fail instead).
prometheus:
	@if ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make test: installing Debian's prometheus for promtool (the alerting rule tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	    service prometheus stop >/dev/null 2>&1 || true; \
	  else \
	    echo "make test: promtool is missing, so the Prometheus rule tests will be skipped;"; \
	    echo "           install it with: sudo apt-get install prometheus"; \
	  fi; \
	fi

test: $(VENV)/.installed-dev chromium rabbitmq prometheus
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

$(BENCH_VENV)/.installed: bench/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

# `make bench` prints the full table (about 15 minutes); `make bench QUICK=1` runs every benchmark
# at a tiny size to prove the suite works (CI runs it; its figures say nothing about speed).
bench: $(VENV)/.installed-dev $(BENCH_VENV)/.installed
	PULSE_BENCH_VENV=$(BENCH_VENV) $(PY) -m bench.run $(if $(filter 1 yes true,$(QUICK)),--quick,)

# `make soak` runs mixed tasks for DURATION seconds and reports whether memory stays flat
# (bench/soak.py); not part of `make bench` or CI.
soak: $(VENV)/.installed-dev $(BENCH_VENV)/.installed
	$(PY) -m bench.soak --duration $(DURATION)

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache test-artifacts bench-artifacts
