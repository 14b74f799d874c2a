# One image for every process of the export service:
#   docker run IMAGE api | worker | relay | migrate up | cleanup | dlq list ...
#
# Layout: the service runs from its source tree in /app (PYTHONPATH), its runtime
# dependencies live in /opt/venv. service/migrations.py finds the SQL files at
# Path(service/__file__).parent.parent / "migrations", i.e. /app/migrations; a regular
# `pip install .` would put the package in site-packages, where that path does not exist.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
COPY pyproject.toml /build/pyproject.toml
# The runtime dependencies exactly as pyproject.toml lists them (no dev extras).
RUN python -c "import tomllib; deps = tomllib.load(open('/build/pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > /build/requirements.txt \
 && /opt/venv/bin/pip install --requirement /build/requirements.txt
# The `exporter` command, the same entry point as [project.scripts] in pyproject.toml.
RUN printf '#!/opt/venv/bin/python\nimport sys\nfrom service.cli import main\nsys.exit(main())\n' > /opt/venv/bin/exporter \
 && chmod 0755 /opt/venv/bin/exporter


FROM python:3.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EXPORTER_HTTP_HOST=0.0.0.0 \
    EXPORTER_STORAGE_DIR=/var/lib/exporter

RUN groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/exporter --no-create-home \
      --shell /usr/sbin/nologin exporter \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/exporter

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Code and migrations stay owned by root: the service cannot change them.
COPY service /app/service
COPY migrations /app/migrations
RUN python -m compileall -q /app/service

USER 10001:10001
EXPOSE 8000 9100

# /healthz of whatever this container runs, without curl: a worker answers on
# EXPORTER_METRICS_PORT, the API (and `run`) on EXPORTER_HTTP_PORT; one-shot commands
# (migrate, cleanup, dlq, relay) serve nothing and count as healthy while they run.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; argv = open('/proc/1/cmdline', 'rb').read().split(bytes(1)); port = os.environ.get('EXPORTER_METRICS_PORT', '9100') if b'worker' in argv else os.environ.get('EXPORTER_HTTP_PORT', '8000') if b'api' in argv or b'run' in argv else sys.exit(0); urllib.request.urlopen('http://127.0.0.1:' + port + '/healthz', timeout=4)"]

ENTRYPOINT ["exporter"]
CMD ["api"]
