"""JVM dependencies: resolved once from Maven Central into a local cache.

``jvm/pom.xml`` (shipped with the package) declares the classpaths as Maven
profiles: ``spark`` (Delta Lake and the Spark Kafka source), ``s3`` (the S3A
file system: hadoop-aws and the AWS SDK bundle, only for a lake on ``s3a://``)
and ``kafka`` (an Apache Kafka broker). This module runs ``mvn
dependency:copy-dependencies`` for each into ``<jars.cache>/<profile>/`` and
writes a marker keyed by the pom's hash, so a second run does nothing and works
offline.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ecom import storage
from ecom.errors import JarsUnresolvable
from ecom.settings import Settings

PROFILES = ("spark", "kafka")  # always resolved; "s3" too when the lake is on S3 (needed_profiles)
S3_PROFILE = "s3"
_VERSION_SUFFIX = re.compile(r"-\d[\w.\-]*\.jar$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Maven colours its output even in batch mode


class JarError(JarsUnresolvable):
    """The JVM dependencies could not be resolved (one line; Maven's output in ``detail``)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def _pom_hash(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()[:16]


def profile_dir(settings: Settings, profile: str) -> Path:
    return Path(settings.jars.cache) / profile


def is_resolved(settings: Settings, profile: str) -> bool:
    marker = profile_dir(settings, profile) / ".resolved"
    return marker.exists() and marker.read_text().strip() == _pom_hash(Path(settings.jars.pom))


def needed_profiles(settings: Settings) -> tuple[str, ...]:
    """The profiles these settings run with: the S3A jars only for a lake or checkpoints on S3."""
    on_s3 = storage.is_s3(settings.lake.root) or storage.is_s3(settings.lake.checkpoints)
    return (*PROFILES, S3_PROFILE) if on_s3 else PROFILES


def spark_profiles(settings: Settings) -> tuple[str, ...]:
    """The profiles whose jars Spark gets."""
    return tuple(p for p in needed_profiles(settings) if p != "kafka")


def resolve(settings: Settings, profiles: tuple[str, ...] | None = None, quiet: bool = False) -> None:
    """Resolve each profile's jars (default: ``needed_profiles``) unless already cached for this pom."""
    pom = Path(settings.jars.pom)
    if profiles is None:
        profiles = needed_profiles(settings)
    for profile in profiles:
        if is_resolved(settings, profile):
            continue
        mvn = shutil.which("mvn")
        if mvn is None:
            raise JarError(
                f"the {profile} jars are not in {profile_dir(settings, profile)} and Maven (mvn) is not on PATH: "
                "install it (apt-get install maven) and run `ecom setup`, or copy the cache from a machine that has it"
            )
        target = profile_dir(settings, profile)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        if not quiet:
            print(f"resolving {profile} jars from Maven Central into {target} ...", flush=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(pom), "-P", profile,
            "dependency:copy-dependencies", f"-DoutputDirectory={target}", "-DincludeScope=runtime",
        ]  # fmt: skip
        returncode, text = _run_with_progress(cmd, None if quiet else f"resolving the {profile} jars")
        if returncode != 0:
            output = _ANSI.sub("", text).strip().splitlines()
            errors = [line.strip() for line in output if line.startswith("[ERROR] ") and len(line.strip()) > 7]
            reason = f" ({_shorten(errors[0][8:])})" if errors else ""
            raise JarError(
                f"mvn could not resolve the {profile} jars into {target}{reason}; connect to Maven Central once "
                "and run `ecom setup` (cached after that), or point ECOM_JARS__CACHE at a cache from a machine "
                "that has it",
                detail="\n".join(output[-15:]),
            )
        (target / ".resolved").write_text(_pom_hash(pom))


def _run_with_progress(cmd: list[str], what: str | None, every_s: float = 15.0) -> tuple[int, str]:
    """Run ``cmd`` to its end (exit code, output); while it runs, a line on stderr every ``every_s`` seconds."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while True:
        try:
            output, _ = proc.communicate(timeout=every_s)
            return proc.returncode, output
        except subprocess.TimeoutExpired:
            if what:
                print(f"  {what}: {time.monotonic() - started:.0f} s ...", file=sys.stderr, flush=True)


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _artifact(jar_name: str) -> str:
    return _VERSION_SUFFIX.sub("", jar_name)


def spark_jars(settings: Settings, profiles: tuple[str, ...] | None = None) -> list[str]:
    """Jars to hand Spark: the resolved ones that pyspark does not already ship.

    pyspark bundles Spark, Hadoop, Jackson, Parquet and Scala; adding a second
    (often older) copy of those to the classpath only invites conflicts.
    """
    profiles = spark_profiles(settings) if profiles is None else profiles
    missing = tuple(p for p in profiles if not is_resolved(settings, p))
    if missing:
        resolve(settings, missing)
    import pyspark

    shipped = {_artifact(p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    jars = sorted(j for p in profiles for j in profile_dir(settings, p).glob("*.jar"))
    return [str(j) for j in jars if _artifact(j.name) not in shipped]


def kafka_classpath(settings: Settings) -> str:
    if not is_resolved(settings, "kafka"):
        resolve(settings, ("kafka",))
    return ":".join(str(j) for j in sorted(profile_dir(settings, "kafka").glob("*.jar")))
