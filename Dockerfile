# One image for every pipeline stage and the dashboard (profile "docker").
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/ecom
COPY pyproject.toml README.md requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY ecom ecom
COPY pipelines pipelines
COPY ml ml
COPY serving serving
COPY dashboard dashboard
COPY simulator simulator
COPY conf conf
COPY jvm jvm
RUN pip install --no-cache-dir --no-deps -e . \
    && ECOM_PROFILE=docker ecom setup
ENV ECOM_PROFILE=docker
ENTRYPOINT ["ecom"]
CMD ["--help"]
