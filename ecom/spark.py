"""Spark session factory: Delta Lake and the Kafka source attached, quiet logs.

Local mode by default (``spark.master`` from settings); under ``spark-submit``
on a cluster the master given there wins. Python workers run the project's
interpreter. Deletion vectors stay off so delta-rs and DuckDB can read every
table.
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from ecom import jars
from ecom.settings import CONF_DIR, Settings

LOG4J2_CONF = CONF_DIR / "log4j2.properties"


def spark_conf(settings: Settings) -> dict[str, str]:
    s = settings.spark
    conf = {
        "spark.app.name": s.app_name,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(s.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": s.driver_memory,
        "spark.ui.enabled": str(s.ui_enabled).lower(),
        "spark.ui.port": str(s.ui_port),
        "spark.ui.showConsoleProgress": "false",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
        # Delta rebuilds table state with this many tasks (default 50): far too many for small tables on few cores.
        "spark.databricks.delta.snapshotPartitions": str(max(1, s.shuffle_partitions)),
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # A Delta checkpoint every 10 commits cost 2-4 s of a micro-batch here; every 100 keeps reads quick.
        "spark.databricks.delta.properties.defaults.checkpointInterval": "100",
        # Batches come to the driver and back as Arrow (the silver stream's pandas steps).
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.streaming.stateStore.providerClass":
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        "spark.sql.adaptive.enabled": "true",
        # JVM logs to stderr, quiet where a warning is expected here (conf/log4j2.properties)
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J2_CONF.as_uri()}",
    }  # fmt: skip
    conf.update(s.extra_conf)
    return conf


def get_spark(settings: Settings, app_name: str | None = None) -> SparkSession:
    """The (singleton) SparkSession for this process."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ  # launched by spark-submit: its --master wins
    if not under_submit:
        builder = builder.master(settings.spark.master)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    if app_name:
        builder = builder.appName(app_name)
    if not under_submit:
        builder = builder.config("spark.jars", ",".join(jars.spark_jars(settings)))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    return spark
