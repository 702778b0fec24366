# Build the wheel, then install only the wheel: the image runs what `pip install` gives
# anyone, with the env files copied beside it (ORCHESTRATOR_CONFIG_DIR).
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
WORKDIR /app
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl
COPY env ./env
ENV ORCHESTRATOR_CONFIG_DIR=/app/env
CMD ["orchestrator", "run", "--mode", "MW"]
