"""The Langfuse ingestion endpoint over HTTP, in a gateway on the real broker: Langfuse's 207
per event, its request-level errors, and what reaches the events topic."""

from __future__ import annotations

import base64
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from conftest import read_batches
from gateway_helpers import in_process_gateway, scenario

from tracebus.config import KafkaSettings
from tracebus.gateway.langfuse import ADAPTER
from tracebus.gateway.langfuse.ids import observation_id_for
from tracebus.kafka.broker import free_port
from tracebus.schemas import EventBatch

TRACE = "7f3c1e2a-8b4d-4c6e-9f01-23456789abcd"
TRACE_ID = "7f3c1e2a8b4d4c6e9f0123456789abcd"
BASIC = {"Authorization": "Basic " + base64.b64encode(b"pk-lf-1:sk-lf-1").decode()}


def gateway(settings: KafkaSettings, **overrides: Any) -> AbstractAsyncContextManager[Any]:
    keys = [("shop", "pk-lf-1:sk-lf-1")]
    return in_process_gateway(settings, [ADAPTER], keys, **overrides)


def event(envelope_id: str, event_type: str, at: str, **body: Any) -> dict[str, Any]:
    return {
        "id": envelope_id,
        "type": event_type,
        "timestamp": f"2026-11-26T09:00:{at}Z",
        "body": body,
    }


BATCH = [
    event(
        "e-update",
        "span-update",
        "03.000",
        id="span-1",
        traceId=TRACE,
        endTime="2026-11-26T09:00:02Z",
    ),
    event("e-span", "span-create", "01.000", id="span-1", traceId=TRACE, name="retrieve"),
    event("e-trace", "trace-create", "00.000", id=TRACE, name="chat", userId="u-1"),
    event("e-no-id", "span-create", "01.000", traceId=TRACE, name="moderation"),
    event("e-level", "generation-create", "01.000", id="g-1", traceId=TRACE, level="LOUD"),
    event("e-log", "sdk-log", "01.000", log={"message": "flushed"}),
    event("e-long", "span-create", "01.000", id="span-2", traceId=TRACE, name="n" * 1001),
    event("e-session", "score-create", "04.000", name="nps", value=9, sessionId="s-1"),
    event("e-late", "generation-update", "00.500", id="g-2", traceId=TRACE, model="gpt-4o"),
    event("e-early", "generation-create", "01.000", id="g-2", traceId=TRACE, name="answer"),
]


def test_a_batch_is_answered_per_event_and_only_its_valid_events_are_published(
    kafka: KafkaSettings,
) -> None:
    async def run() -> None:
        async with gateway(kafka) as client:
            response = await client.post(
                "/api/public/ingestion",
                json={"batch": BATCH, "metadata": {"sdk": "x"}},
                headers=BASIC,
            )
            assert response.status_code == 207, response.text
            body = response.json()
            # Langfuse's order: creates by timestamp, then updates by timestamp.
            assert body["successes"] == [
                {"id": envelope, "status": 201}
                for envelope in ("e-trace", "e-span", "e-early", "e-late", "e-update")
            ]
            errors = {e["id"]: e for e in body["errors"]}
            assert sorted(errors) == ["e-level", "e-long", "e-no-id", "e-session"]
            assert all(
                (e["status"], e["message"]) == (400, "Invalid request data")
                for e in errors.values()
            )
            assert orjson.loads(errors["e-no-id"]["error"])[0]["path"] == ["body", "id"]
            levels = ["DEBUG", "DEFAULT", "WARNING", "ERROR"]
            assert orjson.loads(errors["e-level"]["error"]) == [
                {
                    "code": "invalid_value",
                    "values": levels,
                    "path": ["body", "level"],
                    "message": "Invalid option: expected one of "
                    + "|".join(f'"{level}"' for level in levels),
                }
            ]
            assert errors["e-long"]["error"] == (
                "not a valid tracebus event: observation.name: String should have at most 1000 "
                "characters"
            )
            assert errors["e-session"]["error"] == (
                "tracebus keeps scores of traces and observations; scores of a session or a "
                "dataset run are not supported"
            )

    scenario(run)
    [batch] = read_batches(kafka, lambda batches: len(batches) >= 1)
    assert batch.trace_id == TRACE_ID
    kinds = [(e.type, getattr(e, "name", None)) for e in batch.events]
    assert kinds == [
        ("trace", "chat"),
        ("observation", "retrieve"),
        ("observation", "answer"),
        ("observation_update", None),
        ("observation_update", None),
    ]
    answer, late_update = batch.events[2], batch.events[3]
    # The update sent before its create is still applied after it, as Langfuse applies it.
    assert late_update.observation_id == answer.observation_id == observation_id_for("g-2")
    assert late_update.timestamp_unix_nano == answer.timestamp_unix_nano


def test_a_retried_batch_carries_the_same_event_ids(kafka: KafkaSettings) -> None:
    async def run() -> None:
        async with gateway(kafka) as client:
            for _ in range(2):
                response = await client.post(
                    "/api/public/ingestion", json={"batch": BATCH[:3]}, headers=BASIC
                )
                assert response.status_code == 207

    scenario(run)
    batches: list[EventBatch] = read_batches(kafka, lambda b: len(b) >= 2)
    first, second = ([e.event_id for e in b.events] for b in batches)
    assert first == second and len(set(first)) == 3


def test_request_level_errors_come_in_langfuse_s_shape(kafka: KafkaSettings) -> None:
    async def run() -> None:
        async with gateway(kafka) as client:
            not_json = await client.post("/api/public/ingestion", content=b"{", headers=BASIC)
            assert not_json.status_code == 400
            assert not_json.json()["message"] == "Invalid request data"
            assert not_json.json()["errors"][0].startswith("body is not JSON")
            no_batch = await client.post(
                "/api/public/ingestion", json={"events": []}, headers=BASIC
            )
            assert (no_batch.status_code, no_batch.json()) == (
                400,
                {
                    "message": "Invalid request data",
                    "errors": ["Invalid input: expected array, received undefined"],
                },
            )
            empty = await client.post("/api/public/ingestion", json={"batch": []}, headers=BASIC)
            assert (empty.status_code, empty.json()) == (207, {"successes": [], "errors": []})
            anonymous = await client.post("/api/public/ingestion", json={"batch": []})
            assert anonymous.status_code == 401
            assert anonymous.json()["error"] == "UnauthorizedError"
            projects = await client.get("/api/public/projects", headers={"x-api-key": "nope"})
            assert (projects.status_code, projects.json()) == (401, {"message": "invalid API key"})
            health = await client.get("/api/public/health")
            assert (health.status_code, health.json()["status"]) == (200, "OK")
            mine = await client.get("/api/public/projects", headers=BASIC)
            assert mine.json()["data"][0]["id"] == "shop"

    scenario(run)


def test_while_kafka_is_unreachable_the_batch_gets_503_with_retry_after(
    kafka: KafkaSettings,
) -> None:
    unreachable = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})

    async def run() -> None:
        async with gateway(unreachable, ack_timeout_s=0.5, retry_after_s=7) as client:
            response = await client.post(
                "/api/public/ingestion", json={"batch": BATCH}, headers=BASIC
            )
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "7"
            assert response.json() == {
                "error": "ServiceUnavailableError",
                "message": "the gateway is not connected to Kafka yet; retry later",
            }

    scenario(run)


def test_over_the_rate_limit_the_answer_is_langfuse_s_429(kafka: KafkaSettings) -> None:
    async def run() -> None:
        async with gateway(kafka, rate_limit_per_s=0.5, rate_limit_burst=1) as client:
            body = {"batch": []}
            assert (
                await client.post("/api/public/ingestion", json=body, headers=BASIC)
            ).status_code == 207
            limited = await client.post("/api/public/ingestion", json=body, headers=BASIC)
            assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
            assert limited.json() == {
                "message": "rate limit exceeded: 0.5 requests/s per API key (burst 1)",
                "code": "rate_limited",
            }

    scenario(run)
