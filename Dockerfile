# One image for every DreamBot process: the operator, the ops console, each stage
# (`python -m services.<stage>.main`), the MLflow jobs (`python -m mlops.train|calibrate`) and the
# sandbox simulators (`python -m services.sim.polygon|tradier`). The operator is the default command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so source edits do not reinstall them.
COPY pyproject.toml setup.py README.md ./
COPY services ./services
COPY operator ./operator
COPY mlops ./mlops
RUN pip install ".[services,operator]"

# Runtime files the stages read (relative to /app, the project root at run time).
COPY config ./config
COPY data/sample ./data/sample

RUN useradd --uid 10001 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin dreambot
USER 10001:10001

EXPOSE 9100 8050 8080
CMD ["python", "-m", "dreambot_operator", "--standalone", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
