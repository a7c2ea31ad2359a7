# tracebus image: `docker run IMAGE stream`, `docker run IMAGE sink langfuse`, ...
# Used by docker-compose.yml; see "Production deployment" in README.md.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/tracebus
WORKDIR /src
# README.md is the package's readme (pyproject.toml), so the build needs it.
COPY pyproject.toml README.md ./
COPY tracebus ./tracebus
# The rocksdb extra (rocksdict) backs TRACEBUS_STORE=rocksdb in the stream worker.
RUN /opt/tracebus/bin/pip install ".[rocksdb]"


FROM python:3.11-slim

LABEL org.opencontainers.image.title="tracebus" \
      org.opencontainers.image.description="Asynchronous, lossless trace pipeline from LLM apps to Langfuse and LangSmith on Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH="/opt/tracebus/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed, unprivileged uid/gid; the state and output directories exist in the image, owned by
# it, so named volumes mounted there start with the right owner.
RUN groupadd --system --gid 10001 tracebus \
    && useradd --system --uid 10001 --gid tracebus --home-dir /var/lib/tracebus \
        --shell /usr/sbin/nologin tracebus \
    && mkdir -p /var/lib/tracebus/stream /var/lib/tracebus/traces \
    && chown -R tracebus:tracebus /var/lib/tracebus

COPY --from=build /opt/tracebus /opt/tracebus

USER tracebus:tracebus
WORKDIR /var/lib/tracebus

ENTRYPOINT ["tracebus"]
CMD ["--help"]
