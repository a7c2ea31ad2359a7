"""Every worker's HTTP endpoint (Prometheus metrics and a liveness check) and its logs."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from conftest import eventually
from prometheus_client import CollectorRegistry, Counter
from sink_helpers import document, publish
from standins.langfuse import LangfuseStandIn
from streams.stream_helpers import poll_metric
from workers import CliWorker

from tracebus.config import KafkaSettings
from tracebus.kafka.broker import free_port
from tracebus.observability import Heartbeat, serve_metrics


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_metrics_and_health_are_served_and_a_stuck_loop_is_reported() -> None:
    registry = CollectorRegistry()
    Counter("tracebus_test_records", "records", registry=registry).inc(3)
    heartbeat = Heartbeat(stale_after_s=60)
    port = free_port()
    server = serve_metrics(port, registry, heartbeat, host="127.0.0.1")
    try:
        status, text = get(port, "/metrics")
        assert status == 200 and "tracebus_test_records_total 3.0" in text
        assert get(port, "/healthz")[0] == 200
        heartbeat.stale_after_s = 0.0
        status, text = get(port, "/healthz")
        assert status == 503 and text.startswith("stuck: loop seen")
        assert get(port, "/nothing")[0] == 404
    finally:
        server.shutdown()


def secret_forms(secrets: list[str], basic_pairs: list[tuple[str, str]]) -> list[str]:
    """Each secret as sent: as is, and inside HTTP Basic credentials."""
    forms = list(secrets)
    for user, password in basic_pairs:
        forms.append(base64.b64encode(f"{user}:{password}".encode()).decode())
    return forms


def post(port: int, path: str, headers: dict[str, str], body: bytes) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_worker_logs_never_contain_secrets_even_at_debug_level(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex
    langfuse_public, langfuse_secret = f"pk-lf-{suffix}", f"sk-lf-{suffix}"
    langsmith_key = f"lsv2_pt_{suffix}"
    gateway_key, wrong_key = f"tb-good-{suffix}", f"tb-wrong-{suffix}"
    env = {
        **kafka.worker_env(),
        "TRACEBUS_LINGER_MS": "50",
        "TRACEBUS_RETRY_INITIAL_S": "0.1",
        "TRACEBUS_RETRY_MAX_S": "0.5",
        # Undeliverable batches would otherwise delay the SIGTERM exit by the default 30 s.
        "TRACEBUS_DRAIN_TIMEOUT_S": "1",
    }
    langfuse_metrics, langsmith_metrics, gateway_port = free_port(), free_port(), free_port()
    with LangfuseStandIn(langfuse_public, langfuse_secret) as langfuse:
        # A failure first (its answer is logged), then deliveries.
        langfuse.fail_next(401)
        workers = [
            CliWorker(
                ["sink", "langfuse"],
                {
                    **env,
                    "TRACEBUS_GROUP_ID": f"langfuse-{suffix}",
                    "TRACEBUS_METRICS_PORT": str(langfuse_metrics),
                    "TRACEBUS_LANGFUSE_HOST": langfuse.url,
                    "TRACEBUS_LANGFUSE_PUBLIC_KEY": langfuse_public,
                    "TRACEBUS_LANGFUSE_SECRET_KEY": langfuse_secret,
                },
                tmp_path / "sink-langfuse.log",
                log_level="debug",
            ),
            CliWorker(
                ["sink", "langsmith"],
                {
                    **env,
                    "TRACEBUS_GROUP_ID": f"langsmith-{suffix}",
                    "TRACEBUS_METRICS_PORT": str(langsmith_metrics),
                    # Nothing listens there: every request fails to connect and is retried.
                    "TRACEBUS_LANGSMITH_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                    "TRACEBUS_LANGSMITH_API_KEY": langsmith_key,
                },
                tmp_path / "sink-langsmith.log",
                log_level="debug",
            ),
            CliWorker(
                ["gateway", "--host", "127.0.0.1", "--port", str(gateway_port)],
                {**env, "TRACEBUS_API_KEYS": f"demo={gateway_key}"},
                tmp_path / "gateway.log",
                log_level="debug",
            ),
        ]
        try:
            publish(kafka, [document(f"secret-check-{i}") for i in range(3)])
            poll_metric(langfuse_metrics, "tracebus_sink_delivered_total", 3, timeout=60)
            poll_metric(langsmith_metrics, "tracebus_sink_retries_total", 2, timeout=60)
            eventually(lambda: get(gateway_port, "/healthz")[0] == 200, 30, "the gateway")
            otlp = b'{"resourceSpans": []}'
            json_body = {"Content-Type": "application/json"}
            answers = [
                post(
                    gateway_port,
                    "/v1/traces",
                    {**json_body, "Authorization": f"Bearer {key}"},
                    otlp,
                )
                for key in (gateway_key, wrong_key)
            ]
            basic = base64.b64encode(f"demo:{gateway_key}".encode()).decode()
            answers.append(
                post(
                    gateway_port,
                    "/api/public/ingestion",
                    {**json_body, "Authorization": f"Basic {basic}"},
                    b'{"batch": [{"broken": true}]}',
                )
            )
            answers.append(
                post(gateway_port, "/runs/batch", {**json_body, "x-api-key": wrong_key}, b"{")
            )
            assert answers[0] == 200 and answers[1] == 401 and answers[3] == 401, answers
        finally:
            codes = [worker.stop() for worker in workers]
    assert codes == [0, 0, 0], [worker.log_tail() for worker in workers]

    forms = secret_forms(
        [langfuse_public, langfuse_secret, langsmith_key, gateway_key, wrong_key],
        [(langfuse_public, langfuse_secret), ("demo", gateway_key)],
    )
    for worker in workers:
        log = worker.log_path.read_text(errors="replace")
        assert "level=DEBUG" in log, f"{worker.log_path.name} has no debug records"
        leaked = [form for form in forms if form in log]
        assert not leaked, f"{worker.log_path.name} contains a secret: {leaked}"
