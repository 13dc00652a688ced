"""Spark session factory: Delta Lake and the Kafka source attached, quiet logs.

Local mode by default (``spark.master`` from settings); under ``spark-submit``
the master, jars and driver address given there win. Only a local-mode driver
is pinned to 127.0.0.1: on a cluster, executors on other machines must reach the
driver at an address ``spark-submit`` (``spark.driver.host``, ``SPARK_LOCAL_IP``)
or the cluster manager chooses. Python workers run the project's interpreter
unless ``PYSPARK_PYTHON`` / ``spark.pyspark.python`` say otherwise. Deletion
vectors stay off so delta-rs and DuckDB can read every table. A lake on
``s3a://`` gets the S3A settings from the environment (``ecom.storage``).
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from ecom import jars, storage
from ecom.settings import CONF_DIR, Settings, package_data

# the settings folder's own, else the package's (an ECOM_CONF_DIR may hold only the YAML files)
LOG4J2_CONF = next(
    (p for p in (CONF_DIR / "log4j2.properties", package_data() / "conf" / "log4j2.properties") if p.is_file()),
    package_data() / "conf" / "log4j2.properties",
)


def is_local_master(master: str) -> bool:
    """``local``, ``local[N]``, ``local[*]``, ``local[N,F]``: driver and executors in this one process."""
    return master == "local" or master.startswith("local[")


def driver_address_conf(master: str) -> dict[str, str]:
    """Pin a local-mode driver to the loopback address (nothing listens on other interfaces); under any cluster
    master leave the driver's address to ``spark-submit`` and the cluster manager."""
    if not is_local_master(master):
        return {}
    return {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}


def spark_conf(settings: Settings, under_submit: bool = False) -> dict[str, str]:
    """The session's configuration; ``under_submit``: launched by ``spark-submit``, whose master, driver address
    and Python interpreters are left as it set them."""
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
    }  # fmt: skip
    if not under_submit:
        conf.update(driver_address_conf(s.master))
        conf["spark.pyspark.python"] = sys.executable
        conf["spark.pyspark.driver.python"] = sys.executable
        # JVM logs to stderr, quiet where a warning is expected here (conf/log4j2.properties); under spark-submit
        # the driver's JVM is already running, so its own options (--driver-java-options) apply.
        conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={LOG4J2_CONF.as_uri()}"
    conf.update(storage.spark_s3a_conf(settings.lake.root, settings.lake.checkpoints))
    conf.update(s.extra_conf)
    return conf


def jar_conf(settings: Settings) -> dict[str, str]:
    """The resolved jars as ``spark.jars``. In local mode the S3A jars (a 650 MB SDK bundle) go on the driver's
    class path instead: Spark would copy every ``spark.jars`` file for its in-process executor at each start."""
    profiles = jars.spark_profiles(settings)
    conf = {"spark.jars": ",".join(jars.spark_jars(settings, tuple(p for p in profiles if p != jars.S3_PROFILE)))}
    if jars.S3_PROFILE in profiles:
        s3 = jars.spark_jars(settings, (jars.S3_PROFILE,))
        if is_local_master(settings.spark.master):
            conf["spark.driver.extraClassPath"] = os.pathsep.join(s3)
        else:
            conf["spark.jars"] = ",".join([conf["spark.jars"], *s3])
    return conf


def get_spark(settings: Settings, app_name: str | None = None) -> SparkSession:
    """The (singleton) SparkSession for this process."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ  # launched by spark-submit: its --master wins
    if not under_submit:
        builder = builder.master(settings.spark.master)
    for key, value in spark_conf(settings, under_submit).items():
        builder = builder.config(key, value)
    if app_name:
        builder = builder.appName(app_name)
    if not under_submit:
        for key, value in jar_conf(settings).items():
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    return spark
