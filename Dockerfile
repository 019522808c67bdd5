# syntax=docker/dockerfile:1
# FHIR oncology adapter gateway: `fhir-adapter serve` on port 8080 as a non-root user.
#
#   docker build -t fhir-oncology-adapter .
#   docker run -p 8080:8080 -v gateway-data:/var/lib/fhir-adapter \
#     -e FHIR_ADAPTER_UPSTREAM_URL=https://fhir.example.org/r4 \
#     -e FHIR_ADAPTER_API_KEYS=sha256:<hex> fhir-oncology-adapter
#
# Configuration is by FHIR_ADAPTER_* environment variables (docs/gateway.md). The outbox
# (SQLite by default) lives on the volume so queued submissions survive a new container.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a wheel of the package, so the runtime image carries no sources or build tools ---
# The conversion path is compiled with mypyc (FHIR_ADAPTER_COMPILE=1, setup.py): the same
# source, about 1.3x faster per case record; the C compiler stays in this stage.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FHIR_ADAPTER_COMPILE=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY build_support ./build_support
COPY adapter ./adapter
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /app --shell /usr/sbin/nologin gateway \
    && mkdir -p /app /var/lib/fhir-adapter \
    && chown gateway:gateway /var/lib/fhir-adapter

# The wheel is installed by its path (never by name from an index: no dependency confusion);
# the postgres extra lets FHIR_ADAPTER_DB be a postgresql:// URL for several instances.
# DL3013 does not apply: this installs the exact wheel built above; its dependencies are
# resolved within the bounds pyproject.toml declares.
COPY --from=build /wheels /tmp/wheels
# hadolint ignore=DL3013
RUN set -eu; \
    wheel="$(ls /tmp/wheels/fhir_oncology_adapter-*.whl)"; \
    pip install "${wheel}[postgres]"; \
    rm -rf /tmp/wheels

COPY mappings /app/mappings

ENV FHIR_ADAPTER_MAPPINGS=/app/mappings \
    FHIR_ADAPTER_DB=/var/lib/fhir-adapter/outbox.sqlite3
VOLUME ["/var/lib/fhir-adapter"]
WORKDIR /app
# Numeric, so orchestrators can verify runAsNonRoot without resolving names.
USER 10001:10001
EXPOSE 8080

# No curl in slim images; the standard library does the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

CMD ["fhir-adapter", "serve", "--host", "0.0.0.0", "--port", "8080"]
