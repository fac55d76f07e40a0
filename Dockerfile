# The one image of docker-compose.yml: workers, Flower, the status API and the migration job all run it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SWITCHYARD_HOME=/data \
    SWITCHYARD_FLEET_FILE=/app/switchyard.toml

# git: environments are git worktrees of the target repository.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py switchyard.toml ./
COPY switchyard ./switchyard
COPY routing ./routing
COPY providers ./providers
COPY tasks ./tasks
COPY workers ./workers
COPY environments ./environments
COPY store ./store
COPY web ./web
RUN pip install .

RUN useradd --create-home --uid 10001 switchyard && mkdir -p /data && chown switchyard /data
USER switchyard
VOLUME ["/data"]
CMD ["switchyard", "--help"]
