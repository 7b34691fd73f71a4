# syntax=docker/dockerfile:1
# One image for the rtml jobs: the Spark stream job (`rtml stream`), the drift monitor (`rtml monitor`)
# and one-shot commands (`rtml apply`, `rtml simulate`, `rtml backfill`, `rtml materialize`, `rtml train`).
# The prediction service has its own image: the Bento of bentos/bentofile.yaml (`bentoml containerize`).
#
#   docker build -f infra/docker/rtml.Dockerfile -t rtml:latest .        # from the repository root
#
# Runs as uid 185, gid 0, as the official Spark images. It also works as a Spark-on-Kubernetes image
# (SparkApplication in infra/k8s/): the entrypoint understands the operator's `driver` / `executor`
# commands and passes anything else through.
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1
# Java 17 for Spark; Maven resolves Spark's Kafka connector jars at build time (infra/spark/pom.xml);
# tini reaps Spark's child processes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven tini procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first (cached layer): the exact versions of requirements.lock.
COPY pyproject.toml requirements.lock README.md ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -q --upgrade pip \
 && /opt/venv/bin/pip install -q -r requirements.lock
ENV PATH=/opt/venv/bin:$PATH \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    RTML_CACHE_DIR=/opt/rtml/cache \
    RTML_STATE_DIR=/var/lib/rtml

# The project itself, installed in place (editable): core/settings.py finds feature_repo/ next to rtml/.
COPY core/ core/
COPY rtml/ rtml/
COPY feature_repo/ feature_repo/
COPY streaming/ streaming/
COPY training/ training/
COPY bentos/ bentos/
COPY monitoring/ monitoring/
COPY infra/ infra/
RUN pip install -q --no-deps -e . \
 && python -c "from infra.spark_deps import connector_dir; print(connector_dir())" \
 && install -m 0755 infra/docker/spark-entrypoint.sh /opt/entrypoint.sh \
 && useradd --uid 185 --gid 0 --create-home --home-dir /home/spark spark \
 && mkdir -p /var/lib/rtml \
 && chown -R 185:0 /app /var/lib/rtml /opt/rtml/cache && chmod -R g+w /app /var/lib/rtml /opt/rtml/cache
# numba (stream aggregates) caches compiled kernels; keep that cache somewhere writable.
ENV NUMBA_CACHE_DIR=/tmp/numba-cache

USER 185
VOLUME ["/var/lib/rtml"]
# 9108: stream job metrics; 9109: drift monitor metrics.
EXPOSE 9108 9109
ENTRYPOINT ["/opt/entrypoint.sh"]
CMD ["rtml", "--help"]
