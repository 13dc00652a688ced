# One image for every ecom service of docker-compose.yml (profile "docker") and the MLflow server.
# It carries the JVM jars (Delta Lake, the Spark Kafka source, the Kafka broker), resolved from Maven Central
# at build time by `ecom setup` into /opt/ecom/jars (jars.cache of conf/docker.yaml), so containers start offline.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven procps \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ecom
# Dependencies first, pinned by the lock: a code change does not reinstall them.
COPY pyproject.toml README.md requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY jvm jvm
COPY conf conf
COPY ecom ecom
COPY pipelines pipelines
COPY ml ml
COPY serving serving
COPY dashboard dashboard
COPY simulator simulator
# The project itself (editable: conf/ and jvm/ are found next to the code), then the jars; Maven and its
# local repository leave the image once the jars are in place.
RUN pip install --no-cache-dir --no-deps -e . \
    && ECOM_PROFILE=docker ecom setup \
    && apt-get purge -y --auto-remove maven && rm -rf /root/.m2 /var/lib/apt/lists/*

# Run as a user of its own; /data (the lake, checkpoints, simulator state) and /mlflow are its named volumes.
RUN useradd --create-home --uid 10001 ecom && mkdir -p /data /mlflow && chown ecom:ecom /data /mlflow
USER ecom
WORKDIR /data
ENV ECOM_PROFILE=docker PYTHONUNBUFFERED=1
ENTRYPOINT ["ecom"]
CMD ["--help"]
