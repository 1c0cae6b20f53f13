# The project image: every Airflow component, the Celery workers and the MLflow server run
# it. Dependencies come from uv.lock only (`uv sync --frozen`), compiled to bytecode.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DVC_NO_ANALYTICS=1 \
    GX_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    FEAST_USAGE=False

RUN apt-get update \
 && apt-get install -y --no-install-recommends git curl \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir "uv==0.13.9" \
 && useradd --create-home --uid 50000 mlops

WORKDIR /opt/mlops
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
RUN uv sync --frozen --no-dev && chown -R mlops /opt/mlops

USER mlops
ENV MLOPS_PARAMS=/opt/mlops/params.yaml \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/mlops/dags
