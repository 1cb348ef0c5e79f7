# natlangchain-migrate as a container init command (Kubernetes init container or Job,
# docker-compose service with `service_completed_successfully`: see deploy/).
#   docker build -t natlangchain-migrate .
#   docker run --rm -e DATABASE_URL=postgresql://user:pass@db:5432/natlangchain natlangchain-migrate
# Every setting is an environment variable listed in `natlangchain-migrate --help`.
#
# Reproducible: the base image is pinned by tag and by the digest of its multi-architecture
# index (bump both together), and every Python package comes from docker/*.lock, exact
# versions with their sha256 hashes (regenerate with docker/update-locks).
# PID 1 is the CLI itself, with no init: it spawns no processes (nothing to reap), and it
# handles SIGTERM (rolls back, releases the lock, exits 143) and SIGINT (exits 130).
# tests/test_container_rootfs.py replays these steps on a bare Debian root filesystem.

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build
WORKDIR /src
COPY docker/build-requirements.lock docker/requirements.lock ./docker/
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
        -r docker/build-requirements.lock \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
        -r docker/requirements.lock
COPY pyproject.toml README.md ./
COPY natlangchain_migrate ./natlangchain_migrate
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/*.whl

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
LABEL org.opencontainers.image.title="natlangchain-migrate" \
      org.opencontainers.image.description="NatLangChain's PostgreSQL schema migrations: advisory-locked, exactly once, all-or-nothing" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d"
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin migrate
COPY --from=build /opt/venv /opt/venv
USER 10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    NATLANGCHAIN_MIGRATE_LOG_FORMAT=json \
    NATLANGCHAIN_MIGRATE_WAIT=60
ENTRYPOINT ["natlangchain-migrate"]
