import pytest

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
