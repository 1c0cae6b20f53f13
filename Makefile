# One command installs from the lock file and runs the demo: `make demo`.
# One more runs the tests: `make test`.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export FEAST_USAGE := False

.PHONY: install demo serve prometheus ui test lint airflow bench bench-peers clean

install: $(VENV)/.installed

$(UV):
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# --frozen installs exactly uv.lock; bytecode is compiled at install time so that every
# task process does not recompile mlflow, feast, great_expectations and evidently.
$(VENV)/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

demo: install
	$(VENV)/bin/mlops run

# The champion online on http://127.0.0.1:$(SERVE_PORT) (README, "Serving"); Ctrl-C stops it.
serve: install
	$(VENV)/bin/mlops serve --port $(SERVE_PORT) $(SERVE_ARGS)

# Prometheus on http://127.0.0.1:9090 with the alert rules, and the Pushgateway on :9091
# that stages push to when MLOPS_PUSHGATEWAY_URL=http://127.0.0.1:9091 (README,
# "Observability"); Ctrl-C stops both. Debian's prometheus and prometheus-pushgateway.
prometheus:
	@command -v prometheus >/dev/null && command -v prometheus-pushgateway >/dev/null \
	  || { echo "needs prometheus and prometheus-pushgateway: apt-get install prometheus prometheus-pushgateway"; exit 1; }
	@mkdir -p data/prometheus
	prometheus-pushgateway --web.listen-address=127.0.0.1:9091 \
	  --persistence.file=data/prometheus/pushgateway.data & gw=$$!; \
	trap "kill $$gw" EXIT; \
	prometheus --config.file=deploy/prometheus/local.yml --storage.tsdb.path=data/prometheus \
	  --web.listen-address=127.0.0.1:9090

# The timeline: Evidently's UI over every drift and performance report, on
# http://127.0.0.1:$(UI_PORT) (README, "Observability"); Ctrl-C stops it.
UI_PORT ?= 8001
ui: install
	$(VENV)/bin/mlops ui --port $(UI_PORT)

# Two workers, a test file each at a time (module fixtures are built once per file), in
# collection order: the few long files (DAGs, integration, production) first, the many
# short ones after, so neither worker is left alone with a long file at the end.
test: install
	$(VENV)/bin/pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15

# A local Airflow on this project (UI on http://127.0.0.1:$(AIRFLOW_PORT)); Ctrl-C stops it.
# The executor and metadata DB come from Airflow's own environment variables (README,
# "Production"); AIRFLOW_ARGS="--workers 2" sets the Celery workers.
AIRFLOW_PORT ?= 8080
SERVE_PORT ?= 8000
airflow: install
	$(VENV)/bin/python -m mlops.airflow.local --port $(AIRFLOW_PORT) $(AIRFLOW_ARGS)

# Benchmarks, never part of the tests: 1M rows by default, e.g. BENCH_ARGS="--sizes 100k,1M,5M"
# or "--quick". Results land in bench/results/ (results.json, results.md).
bench: install
	nice -n 10 $(VENV)/bin/python -m bench.run $(BENCH_ARGS)

# The demo beside the framework a user would pick instead: bare, `mlops run`, a cold
# `dvc repro` and the same computations as a ZenML pipeline, in interleaved rounds. ZenML
# gets a virtual environment of its own (bench/peers/requirements-zenml.txt, never uv.lock).
bench-peers: install
	nice -n 10 $(VENV)/bin/python -m bench.run --stages e2e --peers $(BENCH_ARGS)

# ruff (rules in pyproject.toml), the formatter's check and mypy: what .ci/run runs first.
lint: install
	$(VENV)/bin/ruff check mlops dags tests bench
	$(VENV)/bin/ruff format --check mlops dags tests bench
	$(VENV)/bin/mypy mlops

clean:
	rm -rf data mlflow.db mlartifacts great_expectations/uncommitted .dvcstore
