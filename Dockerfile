# syntax=docker/dockerfile:1
# One image for every M3 Bridge process: `docker run m3bridge:latest serve <service>`, `migrate`, `topics`.

# ---- builder: install the package (runtime dependencies only, no dev extras) into a venv ----
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY m3bridge ./m3bridge
COPY services ./services
COPY shared ./shared
COPY simulators ./simulators
RUN pip install --upgrade pip && pip install ".[mssql]"

# ---- runtime: the venv only, no build tools, no sources ----
FROM python:3.11-slim AS runtime

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    M3B_HTTP_HOST=0.0.0.0 \
    M3B_HTTP_PORT=8000 \
    M3B_LOG_FORMAT=json

# The QuoteWerks SQL connector (mssql+aioodbc) needs unixODBC and an ODBC driver for SQL Server: FreeTDS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends unixodbc tdsodbc \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 m3bridge \
    && useradd --system --uid 10001 --gid m3bridge --home-dir /app --shell /usr/sbin/nologin m3bridge \
    && mkdir -p /app/var \
    && chown -R m3bridge:m3bridge /app

COPY --from=builder /opt/venv /opt/venv
# The default order mapping rules (M3B_MAPPING_FILE is relative to /app); mount your own over it.
COPY --chown=m3bridge:m3bridge deploy/config /app/deploy/config

WORKDIR /app
USER m3bridge

EXPOSE 8000

# No curl in slim: ask /readyz with the standard library (urlopen raises on 503, so the exit code is 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["m3bridge"]
CMD ["serve", "order-writer"]
