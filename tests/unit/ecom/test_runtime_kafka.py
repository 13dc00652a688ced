"""The embedded Kafka: a cluster id the storage tool takes as one; the nodes of a cluster, their ports,
replication and SCRAM settings (no broker is started)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

import pytest

from ecom.runtime import kafka


def test_a_cluster_id_never_starts_with_a_dash_even_when_the_draw_does(monkeypatch):
    # 0xf8 as the first byte encodes to "-" first in URL-safe base64: the first two draws start with a dash.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\xfb" + bytes(15)), uuid.UUID(int=7)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(draws))
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")
    cluster_id = kafka.new_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(uuid.UUID(int=7).bytes).decode().rstrip("=")
    assert len(cluster_id) == 22


def test_many_cluster_ids_are_distinct_and_none_starts_with_a_dash():
    ids = {kafka.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert not [i for i in ids if i.startswith("-")]


def _cluster_settings(tmp_path, **env):
    from ecom.settings import load_settings

    return load_settings("local", environ=env).model_copy(update={"data_dir": str(tmp_path)})


def _props(settings, node_index=0) -> dict[str, str]:
    nodes = kafka.node_layout(settings)
    return kafka.broker_properties(settings, nodes[node_index], nodes)


def test_the_default_is_one_node_in_the_single_brokers_places_with_one_replica(tmp_path):
    settings = _cluster_settings(tmp_path)
    (node,) = kafka.node_layout(settings)
    assert (node.node_id, node.port, node.controller_port) == (1, 9092, 9093)
    assert node.home == tmp_path / "kafka" and node.process.name == "kafka"
    props = _props(settings)
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == "1" and props["min.insync.replicas"] == "1"
    assert not any(key.startswith(("sasl.", "listener.name.")) for key in props)


def test_three_brokers_form_one_quorum_with_three_replicas_two_in_sync(tmp_path):
    settings = _cluster_settings(tmp_path, ECOM_KAFKA__BROKERS="3")
    nodes = kafka.node_layout(settings)
    assert [(n.node_id, n.port, n.controller_port) for n in nodes] == [
        (1, 9092, 9093),
        (2, 9102, 9103),
        (3, 9112, 9113),
    ]
    assert [n.process.name for n in nodes] == ["kafka", "kafka-2", "kafka-3"]
    assert len({n.log_dir for n in nodes}) == 3
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112"
    for i, node in enumerate(nodes):
        props = _props(settings, i)
        assert props["node.id"] == str(node.node_id)
        assert props["controller.quorum.voters"] == "1@127.0.0.1:9093,2@127.0.0.1:9103,3@127.0.0.1:9113"
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{node.port}"
        for key in ("default.replication.factor", "offsets.topic.replication.factor"):
            assert props[key] == "3"
        assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"


def test_an_explicit_bootstrap_list_is_kept_for_a_cluster(tmp_path):
    settings = _cluster_settings(tmp_path, ECOM_KAFKA__BROKERS="3", ECOM_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9102")
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9102"


def test_more_replicas_than_brokers_is_refused(tmp_path):
    settings = _cluster_settings(tmp_path, ECOM_KAFKA__REPLICATION_FACTOR="3")
    with pytest.raises(kafka.ServiceError, match="needs at least 3 brokers"):
        _props(settings)


def test_a_sasl_broker_asks_clients_and_brokers_for_scram(tmp_path, monkeypatch):
    monkeypatch.setenv("ECOM_KAFKA_PASSWORD", "pw")
    settings = _cluster_settings(
        tmp_path,
        ECOM_KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT",
        ECOM_KAFKA__SASL_MECHANISM="SCRAM-SHA-512",
        ECOM_KAFKA__SASL_USERNAME="ecom",
    )
    props = _props(settings)
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["listener.security.protocol.map"] == "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    jaas = props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    assert jaas == 'org.apache.kafka.common.security.scram.ScramLoginModule required username="ecom" password="pw";'
    # RFC 7677's SCRAM-SHA-256 example: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations
    monkeypatch.setattr(kafka, "SCRAM_ITERATIONS", 4096)
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    argument = kafka.scram_user_argument("SCRAM-SHA-256", "user", "pencil", salt=salt)
    assert argument.startswith('SCRAM-SHA-256=[name="user",iterations=4096,salt="W22ZaJ0SNY7soEsUEjb6gQ=="')
    salted = base64.b64decode(argument.split('saltedpassword="')[1].rstrip('"]'))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    assert base64.b64encode(stored_key).decode() == "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
    assert "pencil" not in argument


def test_the_embedded_broker_refuses_tls_and_plain(tmp_path, monkeypatch):
    monkeypatch.setenv("ECOM_KAFKA_PASSWORD", "pw")
    tls = _cluster_settings(tmp_path, ECOM_KAFKA__SECURITY_PROTOCOL="SASL_SSL")
    with pytest.raises(kafka.ServiceError, match="PLAINTEXT or SASL_PLAINTEXT"):
        _props(tls)
    plain = _cluster_settings(
        tmp_path,
        ECOM_KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT",
        ECOM_KAFKA__SASL_MECHANISM="PLAIN",
        ECOM_KAFKA__SASL_USERNAME="ecom",
    )
    with pytest.raises(kafka.ServiceError, match="SCRAM"):
        _props(plain)
    with pytest.raises(kafka.ServiceError, match="double quote"):
        kafka.scram_user_argument("SCRAM-SHA-512", 'ec"om', "pw")


def test_nodes_of_a_cluster_share_one_cluster_id_kept_with_the_data(tmp_path):
    settings = _cluster_settings(tmp_path, ECOM_KAFKA__BROKERS="3")
    first = kafka.EmbeddedKafka(settings).cluster_id()
    assert kafka.EmbeddedKafka(settings).cluster_id() == first
    assert (tmp_path / "kafka" / "cluster_id").read_text().strip() == first


def test_an_older_single_broker_folder_keeps_its_cluster_id(tmp_path):
    settings = _cluster_settings(tmp_path)
    logs = tmp_path / "kafka" / "logs"
    logs.mkdir(parents=True)
    (logs / "meta.properties").write_text("version=1\ncluster.id=AbCdEfGhIjKlMnOpQrStUv\nnode.id=1\n")
    assert kafka.EmbeddedKafka(settings).cluster_id() == "AbCdEfGhIjKlMnOpQrStUv"


@pytest.mark.parametrize(
    ("value", "written"),
    [("plain=ok;", "plain=ok;"), ("a\\b", "a\\\\b"), ("é", "\\u00e9"), ("😀", "\\ud83d\\ude00"), ("a\nb", "a\\u000ab")],
)
def test_property_values_are_written_as_java_reads_them_back(value, written):
    assert kafka.properties_value(value) == written


def test_stop_also_stops_nodes_a_bigger_cluster_started(tmp_path):
    """``ecom down`` without ECOM_KAFKA__BROKERS=3 still stops nodes 2 and 3 (stand-ins: ``sleep``)."""
    from ecom.runtime.process import ManagedProcess

    settings = _cluster_settings(tmp_path)
    extra = [ManagedProcess(name, settings.run_dir) for name in ("kafka-2", "kafka-3")]
    for process in extra:
        process.start(["sleep", "300"])
    assert all(p.is_running() for p in extra)
    assert kafka.EmbeddedKafka(settings).stop()
    assert not any(p.is_running() for p in extra)
