# syntax=docker/dockerfile:1
# The orchestrator image: the wheel (base install, no embedded servers) and env/, run as
# uid 10001. It is a base image: an application adds its handlers on top, either as files
#
#   FROM orchestrator:0.1.0
#   COPY handlers/ /app/handlers/
#   ENV HANDLER_PYTHONPATH=/app/handlers
#
# or as an installed package (pip needs root to write site-packages, then back to 10001)
#
#   FROM orchestrator:0.1.0
#   USER root
#   RUN pip install --no-cache-dir myapp
#   USER 10001:10001
#
# Build: docker build -t orchestrator:0.1.0 .   See docs/deploying.md.

# Stage 1: build the wheel from the same files `pip install .` would use, nothing else.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
RUN python -m build --wheel --outdir /dist

# Stage 2: install only the wheel, so the image runs what `pip install orchestrator` gives
# anyone (no source tree, no build tools, no extras).
FROM python:3.11-slim
# Fixed numeric ids: Kubernetes' runAsNonRoot can only verify a numeric USER, and the
# manifests in deploy/kubernetes set the same runAsUser.
RUN groupadd --system --gid 10001 orchestrator \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app \
       --shell /usr/sbin/nologin orchestrator
# tini as PID 1: it passes SIGTERM on to the daemon and reaps processes orphaned below it
# (a killed consumer's handler processes), which the daemon does not wait for.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
# The wheel is bind-mounted for the install only, so it is not left in a layer.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    pip install --no-cache-dir /dist/*.whl
WORKDIR /app
# Root-owned and read-only to the daemon's user; settings come from env/<ORCHESTRATOR_ENV>.json
# and environment variables of the same names.
COPY env ./env
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in Kubernetes.
# PYTHONUNBUFFERED: log lines reach `docker logs` / `kubectl logs` as they are written.
ENV ORCHESTRATOR_CONFIG_DIR=/app/env \
    ORCHESTRATOR_ENV=production \
    HEALTH_PORT=8080 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# 3000: the master's API, dashboard and /metrics (PORT); 8080: /livez and /readyz of every
# mode (HEALTH_PORT).
EXPOSE 3000 8080
# No curl in slim: python's urllib. urlopen raises on a 503, so the check fails then too.
# HEALTH_PORT=0 turns the endpoints off, and with them this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('HEALTH_PORT', '8080'); port == '0' or urllib.request.urlopen(f'http://127.0.0.1:{port}/livez', timeout=4)"]
# The mode comes from MODE (M, W or MW; MW if unset), so one image serves every Deployment.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["orchestrator", "run"]
