"""The Spark session's settings: where the driver listens, what spark-submit keeps for itself (no JVM started)."""

import sys

import pytest

from ecom.settings import load_settings
from ecom.spark import driver_address_conf, is_local_master, spark_conf

LOOPBACK = {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "local[2,3]"])
def test_a_local_driver_is_pinned_to_loopback(master):
    assert is_local_master(master)
    assert driver_address_conf(master) == LOOPBACK


@pytest.mark.parametrize("master", ["spark://10.0.0.5:7077", "yarn", "k8s://https://10.0.0.1:6443", "localhost"])
def test_a_cluster_driver_address_is_left_to_spark_submit_and_the_cluster(master):
    assert not is_local_master(master)
    assert driver_address_conf(master) == {}


def test_session_conf_pins_the_driver_only_in_local_mode():
    local = spark_conf(load_settings("test", environ={}))
    assert {k: local[k] for k in LOOPBACK} == LOOPBACK
    assert local["spark.pyspark.python"] == sys.executable
    cluster = spark_conf(load_settings("test", environ={"ECOM_SPARK__MASTER": "spark://10.0.0.5:7077"}))
    assert not set(LOOPBACK) & set(cluster)


def test_under_spark_submit_its_address_interpreters_and_java_options_win():
    conf = spark_conf(load_settings("test", environ={}), under_submit=True)
    kept = {"spark.driver.host", "spark.driver.bindAddress", "spark.pyspark.python", "spark.pyspark.driver.python"}
    assert not kept & set(conf)
    assert "spark.driver.extraJavaOptions" not in conf
    assert conf["spark.sql.session.timeZone"] == "UTC"


def test_an_s3_lake_adds_the_s3a_settings(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:59150")
    conf = spark_conf(load_settings("test", environ={"ECOM_LAKE__ROOT": "s3a://lake/lake"}))
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:59150"
    assert "spark.hadoop.fs.s3a.endpoint" not in spark_conf(load_settings("test", environ={}))


def test_local_mode_puts_the_s3a_jars_on_the_class_path_a_cluster_ships_them(monkeypatch):
    from ecom import jars
    from ecom.spark import jar_conf

    monkeypatch.setattr(jars, "spark_jars", lambda settings, profiles=None: [f"/jars/{p}.jar" for p in profiles])
    local = load_settings("test", environ={"ECOM_LAKE__ROOT": "s3a://lake/lake"})
    assert jar_conf(local) == {"spark.jars": "/jars/spark.jar", "spark.driver.extraClassPath": "/jars/s3.jar"}
    cluster = load_settings("test", environ={"ECOM_LAKE__ROOT": "s3a://lake/lake", "ECOM_SPARK__MASTER": "yarn"})
    assert jar_conf(cluster) == {"spark.jars": "/jars/spark.jar,/jars/s3.jar"}
    assert jar_conf(load_settings("test", environ={})) == {"spark.jars": "/jars/spark.jar"}
