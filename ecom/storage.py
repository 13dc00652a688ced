"""Where the lake lives: a local folder, or an S3-compatible object store (``s3a://bucket/lake``).

Every engine reaches the lake through this module, so one set of credentials serves them all: the standard
AWS environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``, ``AWS_ENDPOINT_URL`` for a store other than AWS), never a settings file.

- delta-rs (the stream's commits, the gold batch's writes, the lifecycle, ``ecom sql``, reconcile):
  ``storage_options(path)``, passed by ``delta_table`` and ``write_delta`` at every place a table is opened.
  A local path gets ``None``, so local lakes work exactly as before.
- Spark: ``spark_s3a_conf`` (``spark.hadoop.fs.s3a.*``), added by ``ecom.spark``; the S3A file system itself
  (hadoop-aws and the AWS SDK bundle) is the ``s3`` profile of ``jvm/pom.xml`` (``ecom.jars``).

Concurrent writers: several processes commit to the same tables (the stream, the gold batch, the lifecycle,
compaction), and S3 has no atomic rename. delta-rs therefore commits with a conditional put
(``aws_conditional_put=etag``: ``If-None-Match`` on the commit file, refused if another writer made that
version first), which AWS S3, MinIO, R2 and moto support. ``AWS_S3_LOCKING_PROVIDER=dynamodb`` (with
``DELTA_DYNAMO_TABLE_NAME``) uses a DynamoDB lock instead, for stores without conditional writes;
``AWS_S3_ALLOW_UNSAFE_RENAME=true`` opts out of both (one writer only). docs/object-store.md has the details.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

S3_SCHEMES = ("s3://", "s3a://")

# Environment variables handed to delta-rs as they are (object_store's and delta-rs's own names).
_PASSED = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP",
    "AWS_S3_ALLOW_UNSAFE_RENAME",
    "AWS_S3_LOCKING_PROVIDER",
    "DELTA_DYNAMO_TABLE_NAME",
    "AWS_CONDITIONAL_PUT",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
)
DEFAULT_REGION = "us-east-1"


def is_local(path: str) -> bool:
    """A path on this machine's file system (no scheme, or ``file:``)."""
    return "://" not in path or path.startswith("file:")


def is_s3(path: str) -> bool:
    return path.startswith(S3_SCHEMES)


def _endpoint(environ: Mapping[str, str]) -> str | None:
    return environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None


def _region(environ: Mapping[str, str]) -> str:
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def storage_options(path: str, environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """delta-rs ``storage_options`` for a table at ``path``: None for a local path; for ``s3://`` and ``s3a://``
    the credentials and endpoint from the environment and how a commit stays safe with several writers."""
    if not is_s3(path):
        return None
    environ = os.environ if environ is None else environ
    options = {key: environ[key] for key in _PASSED if environ.get(key)}
    endpoint = _endpoint(environ)
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options.setdefault("AWS_ALLOW_HTTP", "true")
    options["AWS_REGION"] = _region(environ)
    locking = options.get("AWS_S3_LOCKING_PROVIDER")
    unsafe = options.get("AWS_S3_ALLOW_UNSAFE_RENAME", "").lower() == "true"
    conditional = options.pop("AWS_CONDITIONAL_PUT", "etag")
    if not locking and not unsafe:
        options["aws_conditional_put"] = conditional
    return options


def delta_table(path: str, **kwargs: Any):
    """The delta-rs ``DeltaTable`` at ``path`` (``version=`` and the like in ``kwargs``), with its storage
    options."""
    from deltalake import DeltaTable

    return DeltaTable(path, storage_options=storage_options(path), **kwargs)


def is_delta_table(path: str) -> bool:
    """Whether a Delta table is at ``path`` (delta-rs)."""
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(path, storage_options=storage_options(path))


def write_delta(path: str, data: Any, **kwargs: Any) -> None:
    """``deltalake.write_deltalake`` to ``path`` with its storage options."""
    from deltalake import write_deltalake

    write_deltalake(path, data, storage_options=storage_options(path), **kwargs)


def spark_s3a_conf(*paths: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Spark settings for S3A when any of ``paths`` (lake root, checkpoint root) is on S3; none otherwise.

    Credentials go into the Hadoop configuration so that executors on other machines have them too (Spark
    redacts ``secret``/``key`` settings in its UI and logs). ``s3://`` paths are read with S3A as well."""
    if not any(is_s3(p) for p in paths):
        return {}
    environ = os.environ if environ is None else environ
    conf = {
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",  # streaming checkpoints
        "spark.hadoop.fs.s3a.endpoint.region": _region(environ),
    }
    endpoint = _endpoint(environ)
    if endpoint:  # a store other than AWS (MinIO, moto, ...): path-style requests, TLS as the URL says
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https://")).lower()
    if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        conf["spark.hadoop.fs.s3a.access.key"] = environ["AWS_ACCESS_KEY_ID"]
        conf["spark.hadoop.fs.s3a.secret.key"] = environ["AWS_SECRET_ACCESS_KEY"]
        if environ.get("AWS_SESSION_TOKEN"):
            conf["spark.hadoop.fs.s3a.session.token"] = environ["AWS_SESSION_TOKEN"]
            conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
                "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
            )
    return conf
