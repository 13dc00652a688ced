"""docker-compose.yml cannot run here (no Docker engine); it must still be valid and consistent."""

from pathlib import Path

import yaml

from ecom.settings import ROOT, load_settings


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_whole_stack_on_the_docker_profile():
    services = compose()["services"]
    assert {"kafka", "postgres", "mlflow", "stream", "generator", "dashboard"} <= set(services)
    for name in ("init", "stream", "generator", "dashboard"):
        assert services[name]["environment"]["ECOM_PROFILE"] == "docker"
        assert services[name]["build"] == "."


def test_compose_names_match_the_docker_profile():
    settings = load_settings("docker", environ={})
    services = compose()["services"]
    host, port = settings.kafka.bootstrap_servers.split(":")
    assert (
        host in services
        and f"PLAINTEXT://{host}:{port}" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert settings.postgres.host in services
    assert services["postgres"]["environment"]["POSTGRES_DB"] == settings.postgres.database
    assert settings.mlflow.tracking_uri == "http://mlflow:5000"


def test_compose_takes_secrets_from_the_environment():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text and "${ECOM_PII_KEY:?" in text
    for line in text.splitlines():
        if "PASSWORD:" in line:
            assert "${" in line


def test_dockerfile_copies_every_package():
    dockerfile = (Path(ROOT) / "Dockerfile").read_text()
    for package in ("ecom", "pipelines", "ml", "serving", "dashboard", "simulator", "conf", "jvm"):
        assert f"COPY {package} {package}" in dockerfile
