# One image for every service of docker-compose.yml: the API (`si api serve`), the Dagster webserver, the
# Dagster daemon and the user-code gRPC server (`dagster code-server start -m pipelines.definitions`).
# Dependencies come from uv.lock exactly (`uv sync --frozen --no-dev`); nothing is resolved at build time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    DAGSTER_HOME=/opt/dagster/home

RUN pip install --no-cache-dir "uv==0.13.9"

WORKDIR /app

# dependencies first (cached while only the code changes)
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

COPY integration_core ./integration_core
COPY pipelines ./pipelines
COPY sandboxes ./sandboxes
COPY migrations ./migrations
COPY alembic.ini dagster.yaml workspace.yaml ./
COPY deploy ./deploy
RUN uv sync --frozen --no-dev \
    && /opt/venv/bin/python -m compileall -q integration_core pipelines sandboxes
# (bytecode at build time: each Dagster run is a fresh process and PYTHONDONTWRITEBYTECODE is set)

# the Dagster instance every Dagster process reads ($DAGSTER_HOME/dagster.yaml; storage from DAGSTER_POSTGRES_URL)
RUN mkdir -p "$DAGSTER_HOME" && cp dagster.yaml "$DAGSTER_HOME/dagster.yaml" \
    && useradd --system --uid 10001 --home-dir /app app \
    && chown -R app "$DAGSTER_HOME"

ENV PATH=/opt/venv/bin:$PATH
USER app
EXPOSE 8000 3000 4000
CMD ["si", "--help"]
