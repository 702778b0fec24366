FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY cli ./cli
COPY env ./env
RUN pip install --no-cache-dir .
ENV ORCHESTRATOR_CONFIG_DIR=/app/env
CMD ["orchestrator", "run", "--mode", "MW"]
