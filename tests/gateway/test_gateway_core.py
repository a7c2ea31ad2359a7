"""What every gateway endpoint shares: API keys, rate limits, body limits and decoding, and the
promise that a request is answered only once Kafka has its events — or 503 when it cannot."""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
import pytest
import zstandard
from aiohttp import web
from conftest import consume, read_batches
from gateway_helpers import in_process_gateway, scenario
from typer.testing import CliRunner

from tracebus.cli.main import app as cli
from tracebus.config import KafkaSettings
from tracebus.gateway.protocol import Adapter, Call, GatewayError, Route
from tracebus.kafka import EmbeddedBroker, create_topics
from tracebus.kafka.broker import free_port
from tracebus.schemas import PROJECT_HEADER, new_observation_id, new_trace_id

KEY = "tb-core-secret"


async def _publish_events(call: Call) -> web.Response:
    events: list[dict[str, Any]] = orjson.loads(call.body)
    problems = [p for p in map(call.publisher.problem, events) if p]
    if problems:
        raise GatewayError(400, "; ".join(problems))
    await call.publisher.publish(events, call.caller)
    return web.json_response({"published": len(events), "project": call.caller.project})


def _render(request: web.Request, error: GatewayError) -> web.Response:
    return web.json_response({"error": error.message}, status=error.status)


EVENTS_ADAPTER = Adapter("test", [Route("POST", "/events", _publish_events)], _render)


def span(trace_id: str, name: str = "step", **fields: Any) -> dict[str, Any]:
    observation_id = new_observation_id()
    return {
        "schema_version": 1,
        "type": "observation",
        "event_id": f"e-{observation_id}",
        "trace_id": trace_id,
        "timestamp_unix_nano": 1_790_000_000_000_000_000,
        "observation_id": observation_id,
        "kind": "span",
        "name": name,
        "start_time_unix_nano": 1_790_000_000_000_000_000,
        **fields,
    }


def running(settings: KafkaSettings, **overrides: Any) -> AbstractAsyncContextManager[Any]:
    keys = [("shop", KEY), ("shop", "pk-lf-1:sk-lf-1")]
    return in_process_gateway(settings, [EVENTS_ADAPTER], keys, **overrides)


def test_a_request_is_answered_only_once_kafka_has_its_events(kafka: KafkaSettings) -> None:
    traces = [new_trace_id(), new_trace_id()]
    events = [span(traces[0], "a"), span(traces[1], "b"), span(traces[0], "c")]

    async def run() -> None:
        async with running(kafka) as client:
            response = await client.post("/events", content=orjson.dumps(events), headers=auth())
            assert response.status_code == 200, response.text
            assert response.json() == {"published": 3, "project": "shop"}

    scenario(run)
    records = consume(kafka.bootstrap_servers, kafka.events_topic, lambda r: len(r) >= 2, 5)
    assert sorted(r.key.decode() for r in records) == sorted(traces)
    assert all(dict(r.headers)[PROJECT_HEADER] == b"shop" for r in records)
    [first] = [orjson.loads(r.value) for r in records if r.key.decode() == traces[0]]
    assert [e["name"] for e in first["events"]] == ["a", "c"]


def auth(key: str = KEY) -> dict[str, str]:
    return {"x-api-key": key}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "no API key: send it as HTTP Basic credentials, a bearer token or x-api-key"),
        (auth("wrong"), 401, "invalid API key"),
        ({"Authorization": "Basic %%%"}, 401, "malformed HTTP Basic credentials"),
        (basic("pk-lf-1", "sk-wrong"), 401, "invalid API key"),
        (basic("pk-lf-1", "sk-lf-1"), 200, None),
        (basic("anyone", KEY), 200, None),
        ({"Authorization": f"Bearer {KEY}"}, 200, None),
        (auth(), 200, None),
    ],
    ids=["none", "wrong", "malformed", "wrong-pair", "pair", "password", "bearer", "x-api-key"],
)
def test_api_keys_are_accepted_the_way_each_sdk_sends_them(
    kafka: KafkaSettings, headers: dict[str, str], status: int, error: str | None
) -> None:
    async def run() -> None:
        async with running(kafka) as client:
            body = orjson.dumps([span(new_trace_id())])
            response = await client.post("/events", content=body, headers=headers)
            assert response.status_code == status
            if error:
                assert response.json() == {"error": error}

    scenario(run)


def test_without_a_key_a_request_is_accepted_only_when_anonymous_use_is_allowed(
    kafka: KafkaSettings,
) -> None:
    async def run() -> None:
        async with running(kafka, allow_anonymous=True) as client:
            response = await client.post("/events", content=orjson.dumps([span(new_trace_id())]))
            assert response.status_code == 200
            assert response.json()["project"] == "default"

    scenario(run)


def test_a_key_over_its_rate_gets_429_with_retry_after(kafka: KafkaSettings) -> None:
    async def run() -> None:
        async with running(kafka, rate_limit_per_s=0.5, rate_limit_burst=2) as client:
            codes = []
            for _ in range(3):
                response = await client.post("/events", content=b"[]", headers=auth())
                codes.append(response.status_code)
            assert codes == [200, 200, 429]
            assert response.headers["Retry-After"] == "2"
            assert response.json()["error"] == (
                "rate limit exceeded: 0.5 requests/s per API key (burst 2)"
            )

    scenario(run)


def test_compressed_bodies_are_decoded(kafka: KafkaSettings) -> None:
    trace_id = new_trace_id()
    body = orjson.dumps([span(trace_id, "gz"), span(trace_id, "zst")])

    async def run() -> None:
        async with running(kafka) as client:
            for encoding, data in (
                ("gzip", gzip.compress(body)),
                ("zstd", zstandard.ZstdCompressor().compress(body)),
            ):
                headers = {**auth(), "Content-Encoding": encoding}
                response = await client.post("/events", content=data, headers=headers)
                assert response.status_code == 200, response.text

    scenario(run)
    batches = read_batches(kafka, lambda b: len(b) >= 2)
    assert len(batches) == 2


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (
            b"x" * 2048,
            {},
            413,
            "request body of 2048 bytes exceeds the gateway's limit of 1024 bytes",
        ),
        (
            gzip.compress(b"[" + b" " * 5000 + b"]"),
            {"Content-Encoding": "gzip"},
            413,
            "decompressed request body exceeds the gateway's limit of 4096 bytes",
        ),
        (
            b"not gzip",
            {"Content-Encoding": "gzip"},
            400,
            "body is not valid gzip: Error -3 while decompressing data: incorrect header check",
        ),
        (b"[]", {"Content-Encoding": "br"}, 415, None),
    ],
    ids=["too-big", "gzip-bomb", "bad-gzip", "unknown-encoding"],
)
def test_bodies_beyond_the_limits_or_badly_encoded_are_refused_with_the_reason(
    kafka: KafkaSettings, body: bytes, headers: dict[str, str], status: int, error: str | None
) -> None:
    async def run() -> None:
        async with running(kafka, max_body_bytes=1024, max_decoded_bytes=4096) as client:
            response = await client.post("/events", content=body, headers={**auth(), **headers})
            assert response.status_code == status, response.text
            if error:
                assert response.json() == {"error": error}

    scenario(run)


def test_oversized_fields_are_cut_and_recorded_and_an_event_still_too_large_is_refused(
    kafka: KafkaSettings,
) -> None:
    trace_id = new_trace_id()
    cut = span(trace_id, "cut", input="x" * 3000)
    huge = span(trace_id, "huge", model_parameters={f"p{i}": "y" * 100 for i in range(30)})

    async def run() -> None:
        async with running(kafka, max_record_bytes=2048) as client:
            refused = await client.post(
                "/events", content=orjson.dumps([span(trace_id, "small"), huge]), headers=auth()
            )
            assert refused.status_code == 400
            assert refused.json()["error"] == (
                "event is 3549 bytes after truncating nothing; the limit is 1920 bytes"
            )
            ok = await client.post("/events", content=orjson.dumps([cut]), headers=auth())
            assert ok.status_code == 200, ok.text

    scenario(run)
    [batch] = read_batches(kafka, lambda b: len(b) >= 1)
    [event] = batch.events
    assert event.name == "cut"
    assert event.input.endswith("[truncated by tracebus: 3002 bytes]")
    assert [(t.field, t.original_bytes) for t in event.truncated] == [("input", 3002)]


def test_while_kafka_is_unreachable_requests_get_503_with_retry_after(
    kafka: KafkaSettings,
) -> None:
    unreachable = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})

    async def run() -> None:
        async with running(unreachable, ack_timeout_s=0.5, retry_after_s=7) as client:
            response = await client.post(
                "/events", content=orjson.dumps([span(new_trace_id())]), headers=auth()
            )
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "7"
            assert response.json() == {
                "error": "the gateway is not connected to Kafka yet; retry later"
            }
            assert (await client.get("/healthz")).status_code == 503

    scenario(run)


def test_when_the_broker_goes_away_requests_get_503_instead_of_hanging() -> None:
    broker = EmbeddedBroker(port=free_port())
    broker.start()
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, events_topic=f"events-{os.getpid()}"
    )
    asyncio.run(create_topics(broker.bootstrap_servers, {settings.events_topic: 1}))

    async def run() -> None:
        async with running(settings, ack_timeout_s=2) as client:
            body = orjson.dumps([span(new_trace_id())])
            assert (await client.post("/events", content=body, headers=auth())).status_code == 200
            broker.stop()
            started = time.monotonic()
            response = await client.post("/events", content=body, headers=auth())
            assert response.status_code == 503, response.text
            assert response.json()["error"].startswith("Kafka did not acknowledge the events")
            assert time.monotonic() - started < 10

    try:
        scenario(run)
    finally:
        broker.stop()


def test_metrics_count_requests_by_protocol_route_and_status(kafka: KafkaSettings) -> None:
    async def run() -> None:
        async with running(kafka) as client:
            await client.post(
                "/events", content=orjson.dumps([span(new_trace_id())]), headers=auth()
            )
            await client.post("/events", content=b"[]", headers=auth("wrong"))
            text = (await client.get("/metrics")).text
            assert (
                'tracebus_gateway_requests_total{protocol="test",route="/events",status="200"} 1.0'
                in text
            )
            assert (
                'tracebus_gateway_requests_total{protocol="test",route="/events",status="401"} 1.0'
                in text
            )
            assert 'tracebus_gateway_events_total{protocol="test"} 1.0' in text
            assert "tracebus_gateway_kafka_connected 1.0" in text

    scenario(run)


def test_the_command_refuses_to_start_without_keys_unless_anonymous_use_is_allowed() -> None:
    result = CliRunner().invoke(cli, ["gateway"], env={"TRACEBUS_API_KEYS": ""})
    assert result.exit_code == 2
    assert "no API keys: set TRACEBUS_API_KEYS=project=key" in result.output
    result = CliRunner().invoke(cli, ["gateway"], env={"TRACEBUS_API_KEYS": "shop"})
    assert result.exit_code == 2
    assert "API key entry 1 is not project=key" in result.output


def test_a_project_name_records_could_not_carry_is_refused_at_start() -> None:
    keys = f"shop=k1,{'p' * 1001}=k2"
    result = CliRunner().invoke(cli, ["gateway"], env={"TRACEBUS_API_KEYS": keys})
    assert result.exit_code == 2
    assert "API key entry 2: a project name has at most 1000 characters" in " ".join(
        result.output.split()
    )
