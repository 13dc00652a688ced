import pytest

from ecom.settings import CONF_DIR as CONF_FILES
from ecom.settings import load_settings


def test_profile_overrides_base_and_expands_paths():
    local = load_settings("local", environ={})
    test = load_settings("test", environ={})
    assert local.kafka.port == 9092
    assert test.kafka.port == 19092
    assert test.data_dir.endswith("/data/test")
    assert test.lake.root == f"{test.data_dir}/lake"
    assert "{" not in test.mlflow.tracking_uri


def test_environment_overrides_win_and_are_typed():
    s = load_settings("local", environ={"ECOM_KAFKA__PORT": "29092", "ECOM_FRAUD__ALERT_THRESHOLD": "75.5"})
    assert s.kafka.port == 29092
    assert s.fraud.alert_threshold == 75.5


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        load_settings("nope", environ={})


def test_unknown_key_is_rejected():
    with pytest.raises(ValueError, match="kafka.typo"):
        load_settings("local", environ={"ECOM_KAFKA__TYPO": "1"})


def test_dsn_comes_from_environment_secrets(monkeypatch):
    s = load_settings("local", environ={})
    monkeypatch.delenv("ECOM_POSTGRES_DSN", raising=False)
    monkeypatch.setenv("ECOM_POSTGRES_PASSWORD", "s3cret")
    assert s.postgres.dsn == "postgresql://ecom:s3cret@127.0.0.1:5433/ecom"
    monkeypatch.setenv("ECOM_POSTGRES_DSN", "postgresql://u@db:5432/x")
    assert s.postgres.dsn == "postgresql://u@db:5432/x"


def _keys(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key).lower()
            yield from _keys(value)


def test_no_secret_in_committed_config():
    import yaml

    from ecom.settings import CONF_DIR

    keys = {k for p in CONF_DIR.glob("*.yaml") for k in _keys(yaml.safe_load(p.read_text()))}
    assert keys, "no settings keys found"
    assert not {k for k in keys if "password" in k or "secret" in k or "pii_key" in k or k == "dsn"}


def test_the_project_home_and_the_package_data_are_found_outside_a_checkout(tmp_path):
    from ecom.settings import conf_dir, package_data, project_home

    # {package}: the pom ships with the package; {root}: $ECOM_HOME when set
    s = load_settings("test", environ={"ECOM_HOME": str(tmp_path)})
    assert s.data_dir == f"{tmp_path}/data/test"
    assert s.jars.pom == str(package_data() / "jvm" / "pom.xml")
    assert (package_data() / "jvm" / "pom.xml").is_file()
    assert (package_data() / "conf" / "log4j2.properties").is_file()
    assert project_home({"ECOM_HOME": str(tmp_path)}) == tmp_path
    assert conf_dir({"ECOM_CONF_DIR": str(tmp_path)}) == tmp_path


def test_settings_files_come_from_ecom_conf_dir(tmp_path):
    (tmp_path / "base.yaml").write_text((CONF_FILES / "base.yaml").read_text())
    (tmp_path / "mine.yaml").write_text("kafka:\n  port: 39092\n")
    s = load_settings("mine", environ={"ECOM_CONF_DIR": str(tmp_path)})
    assert (s.profile, s.kafka.port) == ("mine", 39092)
    with pytest.raises(ValueError, match="use one of mine"):
        load_settings("local", environ={"ECOM_CONF_DIR": str(tmp_path)})


def test_an_s3_lake_resolves_the_s3a_jars_too():
    from ecom.jars import needed_profiles, spark_profiles

    assert needed_profiles(load_settings("test", environ={})) == ("spark", "kafka")
    on_s3 = load_settings("test", environ={"ECOM_LAKE__ROOT": "s3a://lake/lake"})
    assert needed_profiles(on_s3) == ("spark", "kafka", "s3")
    assert spark_profiles(on_s3) == ("spark", "s3")
