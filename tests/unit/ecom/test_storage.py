"""Where the lake lives: delta-rs storage options and Spark's S3A settings from the environment."""

import pytest

from ecom.storage import is_local, is_s3, spark_s3a_conf, storage_options

MOTO = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:59150",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "not-a-secret",
}


@pytest.mark.parametrize("path", ["/data/lake/bronze/transactions", "file:///data/lake/gold/rfm", "data/lake"])
def test_a_local_path_gets_no_storage_options_and_no_s3a_settings(path):
    assert is_local(path)
    assert storage_options(path, MOTO) is None
    assert spark_s3a_conf(path, "/data/checkpoints", environ=MOTO) == {}


def test_an_s3_lake_gets_the_environment_credentials_and_commits_with_a_conditional_put():
    assert is_s3("s3a://lake/silver/transactions") and not is_local("s3a://lake/silver/transactions")
    assert storage_options("s3a://lake/silver/transactions", MOTO) == {
        **MOTO,
        "AWS_ALLOW_HTTP": "true",  # the endpoint is plain http
        "AWS_REGION": "us-east-1",
        "aws_conditional_put": "etag",
    }


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"AWS_S3_LOCKING_PROVIDER": "dynamodb", "DELTA_DYNAMO_TABLE_NAME": "delta_log"}, None),
        ({"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}, None),
        ({"AWS_CONDITIONAL_PUT": "etag"}, "etag"),
        ({}, "etag"),
    ],
)
def test_a_locking_provider_or_an_unsafe_rename_replaces_the_conditional_put(extra, expected):
    options = storage_options("s3://lake/gold/rfm", {**MOTO, **extra, "AWS_REGION": "eu-west-1"})
    assert options.get("aws_conditional_put") == expected
    assert options["AWS_REGION"] == "eu-west-1"
    assert {k: options[k] for k in extra if k != "AWS_CONDITIONAL_PUT"} == {
        k: v for k, v in extra.items() if k != "AWS_CONDITIONAL_PUT"
    }


def test_aws_itself_needs_no_endpoint_and_no_plain_http():
    options = storage_options(
        "s3a://lake/bronze/transactions", {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    )
    assert "AWS_ENDPOINT_URL" not in options and "AWS_ALLOW_HTTP" not in options


def test_spark_reads_the_same_store_with_the_same_credentials():
    conf = spark_s3a_conf("s3a://lake/lake", "/local/checkpoints", environ=MOTO)
    assert conf == {
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:59150",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.access.key": "testing",
        "spark.hadoop.fs.s3a.secret.key": "not-a-secret",
    }


def test_a_session_token_selects_the_temporary_credentials_provider():
    conf = spark_s3a_conf("/lake", "s3a://lake/checkpoints", environ={**MOTO, "AWS_SESSION_TOKEN": "t"})
    assert conf["spark.hadoop.fs.s3a.session.token"] == "t"
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith("TemporaryAWSCredentialsProvider")
