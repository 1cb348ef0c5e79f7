# natlangchain-migrate as a container init command (Kubernetes init container or Job,
# docker-compose service with `service_completed_successfully`).
#   docker build -t natlangchain-migrate .
#   docker run --rm -e DATABASE_URL=postgresql://user:pass@db:5432/natlangchain natlangchain-migrate
# Every setting is an environment variable listed in `natlangchain-migrate --help`.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY natlangchain_migrate ./natlangchain_migrate
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home migrate
USER 10001
ENV NATLANGCHAIN_MIGRATE_LOG_FORMAT=json \
    NATLANGCHAIN_MIGRATE_WAIT=60
ENTRYPOINT ["natlangchain-migrate"]
