"""Kafka over TLS with SASL, as managed Kafka serves it: every client of every part (the
producer SDK, the stream, the sinks, the operating commands) connects with the process's
TRACEBUS_KAFKA_* settings, through a strict front that refuses anything unauthenticated."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from cli.cli_helpers import run_cli
from conftest import eventually, fresh_settings
from gateway.gateway_helpers import API_KEY, GatewayProcess
from gateway.otlp_requests import export, span
from kafka_secure import SecureFront
from pydantic import ValidationError
from sink_helpers import SinkProcess
from streams.stream_helpers import WorkerProcess, send_trace

import tracebus
from tracebus.cli.common import ExitCode
from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.broker import free_port
from tracebus.kafka.connection import KafkaSecurity
from tracebus.schemas import new_trace_id

pytestmark = pytest.mark.timeout(180)

USER, PASSWORD = "tracebus", "s3cret-p4ss"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecureFront, Path]]:
    """A broker reachable only through TLS and SASL, and the CA file that signed its
    certificate."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    port = free_port()
    broker = EmbeddedBroker(port=port, advertised=f"127.0.0.1:{free_port()}")
    with SecureFront(f"127.0.0.1:{port}", context, {USER: PASSWORD}, broker.advertised) as front:
        with pytest.MonkeyPatch.context() as patch:  # its start-up check goes through the front
            for name, value in security_env(ca_file, "PLAIN").items():
                patch.setenv(name, value)
            broker.start()
        try:
            yield front, ca_file
        finally:
            broker.stop()


def security_env(ca_file: Path, mechanism: str, password: str = PASSWORD) -> dict[str, str]:
    return {
        "TRACEBUS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TRACEBUS_KAFKA_SASL_MECHANISM": mechanism,
        "TRACEBUS_KAFKA_SASL_USERNAME": USER,
        "TRACEBUS_KAFKA_SASL_PASSWORD": password,
        "TRACEBUS_KAFKA_SSL_CAFILE": str(ca_file),
    }


def secure_settings(
    front: SecureFront, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> KafkaSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return fresh_settings(front.address)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_traces_go_from_the_sdk_and_the_gateway_through_the_stream_to_a_sink_over_tls_and_sasl(
    secure: tuple[SecureFront, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mechanism: str,
) -> None:
    front, ca_file = secure
    env = security_env(ca_file, mechanism)
    settings = secure_settings(front, env, monkeypatch)
    before = front.authenticated[mechanism]
    out = tmp_path / "out"
    stream = WorkerProcess(settings, tmp_path, **env)
    sink = SinkProcess("jsonl", settings, tmp_path, TRACEBUS_JSONL_DIR=str(out), **env)
    gateway = GatewayProcess(settings, tmp_path, **env)
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    try:
        from_sdk = send_trace(client, "over-tls")
        from_gateway = new_trace_id()
        otlp = export(span(trace_id=from_gateway)).SerializeToString()
        headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {API_KEY}"}
        sent = httpx.post(f"{gateway.url}/v1/traces", content=otlp, headers=headers)
        assert sent.status_code == 200, sent.text

        def written() -> set[str]:
            lines = [line for f in out.glob("*.jsonl") for line in f.read_text().splitlines()]
            return {json.loads(line)["trace_id"] for line in lines}

        eventually(lambda: len(written()) == 2, 90, "both traces written by the sink")
        status = run_cli("status", "-b", front.address, "--traces-topic", settings.traces_topic)
    finally:
        client.close()
        workers = (stream, sink, gateway)
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0, 0], [worker.log_tail() for worker in workers]
    assert written() == {from_sdk, from_gateway}
    assert status.exit_code == 0, status.output
    assert front.authenticated[mechanism] > before
    assert front.refused == 0
    for worker in workers:
        assert PASSWORD not in worker.log_path.read_text()


def test_an_app_can_give_its_client_the_security_settings_instead_of_the_environment(
    secure: tuple[SecureFront, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Constructor arguments win over TRACEBUS_* variables, as for every SDK setting."""
    front, ca_file = secure
    settings = secure_settings(front, security_env(ca_file, "SCRAM-SHA-256"), monkeypatch)
    for name in security_env(ca_file, "PLAIN"):
        monkeypatch.delenv(name)
    before = front.authenticated["SCRAM-SHA-256"]
    security = tracebus.KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username=USER,
        sasl_password=PASSWORD,
        ssl_cafile=ca_file,
    )
    client = tracebus.Client(**settings.model_dump(), security=security, linger_ms=5)
    try:
        send_trace(client, "configured-in-code")  # waits until the broker acknowledged it
    finally:
        client.close()
    assert front.authenticated["SCRAM-SHA-256"] > before
    assert client.counters.dropped == 0


def test_a_wrong_password_is_said_to_be_one(
    secure: tuple[SecureFront, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    front, ca_file = secure
    env = security_env(ca_file, "SCRAM-SHA-512", password="wrong")
    result = run_cli("topics", "describe", "-b", front.address, "--timeout", "3", env=env)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "refused the credentials" in result.output
    assert "wrong" not in result.output


def test_a_client_without_tls_or_sasl_gets_nothing_from_the_broker(
    secure: tuple[SecureFront, Path],
) -> None:
    front, _ = secure
    result = run_cli("topics", "describe", "-b", front.address, "--timeout", "2")
    assert result.exit_code == ExitCode.UNREACHABLE, result.output


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs TRACEBUS_KAFKA_SASL_USERNAME"),
        ({"sasl_username": "u", "sasl_password": "p"}, "does not authenticate with SASL"),
        ({"security_protocol": "SSL", "ssl_certfile": __file__}, "needs its key"),
    ],
)
def test_incomplete_security_settings_are_refused_with_what_is_missing(
    settings: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        KafkaSecurity(**settings)


def test_a_command_with_incomplete_security_settings_exits_2_without_showing_the_password() -> None:
    env = {"TRACEBUS_KAFKA_SASL_USERNAME": "u", "TRACEBUS_KAFKA_SASL_PASSWORD": "hunter2"}
    result = run_cli("topics", "describe", env=env)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "does not authenticate with SASL" in result.output
    assert "hunter2" not in result.output


def test_the_sdk_refuses_incomplete_security_settings_where_the_app_makes_its_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACEBUS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError, match="needs TRACEBUS_KAFKA_SASL_USERNAME"):
        tracebus.Client(bootstrap_servers="127.0.0.1:1")


def test_a_refused_setting_does_not_show_the_password_the_app_may_log() -> None:
    with pytest.raises(ValidationError) as refused:
        KafkaSecurity(sasl_username="u", sasl_password="hunter2")
    assert "hunter2" not in str(refused.value)
