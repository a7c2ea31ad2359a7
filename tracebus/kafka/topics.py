"""Topic creation and description through the Kafka admin API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)

from tracebus.kafka.connection import kafka_options


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int | None  # None: the topic does not exist
    error: str | None = None
    replicas: int | None = None


class KafkaAuthenticationError(ConnectionError):
    """The broker answers, but refuses this process's SASL credentials or mechanism."""


# Retrying them gains nothing: the same credentials are refused again.
_REFUSED_CREDENTIALS = (
    AuthenticationFailedError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)


async def _accepts_connections(options: dict[str, Any]) -> bool:
    """Whether the first server takes a connection made with `options` (`kafka_options`: TLS,
    SASL); KafkaAuthenticationError when it refuses the credentials."""
    bootstrap_servers, security = options["bootstrap_servers"], dict(options)
    del security["bootstrap_servers"]
    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    try:
        connection = await create_conn(
            host or "127.0.0.1", int(port), request_timeout_ms=2000, **security
        )
    except _REFUSED_CREDENTIALS as error:
        raise KafkaAuthenticationError(
            f"Kafka at {bootstrap_servers} refused the credentials: {error}"
        ) from None
    except (KafkaError, OSError, TimeoutError):
        return False
    connection.close()
    return True


async def wait_for_broker(bootstrap_servers: str, timeout: float) -> None:
    """Return once the broker answers a metadata request; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    # Once: the security settings are read and the TLS context loaded for every attempt alike.
    options = kafka_options(bootstrap_servers)
    while time.monotonic() < deadline:
        if not await _accepts_connections(options):
            # Probing one connection first keeps the Kafka client from logging every refused
            # attempt, and tells refused credentials from a broker not up yet.
            await asyncio.sleep(0.05)
            continue
        admin = AIOKafkaAdminClient(**options, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.describe_cluster()
            return
        except (KafkaError, OSError) as error:
            last_error = error
            await asyncio.sleep(0.05)
        finally:
            await admin.close()
    raise TimeoutError(
        f"no Kafka broker answered at {bootstrap_servers} within {timeout:g}s: {last_error}"
    )


class TopicCreationError(RuntimeError):
    """The broker refused to create topics; the message has its reason for each."""


async def create_topics(
    bootstrap_servers: str, partitions: dict[str, int], replication_factor: int = 1
) -> list[str]:
    """Create the missing topics; returns the names created. Existing topics are left alone.
    Raises TopicCreationError with the broker's reasons (e.g. more replicas than brokers)."""
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap_servers))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, count, replication_factor=replication_factor)
            for name, count in partitions.items()
            if name not in existing
        ]
        refused: list[str] = []
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                response = await admin.create_topics(missing)
                # (topic, error code[, message]): version 0 of the response has no message.
                refused = [
                    f"{entry[0]}: {(entry[2] if len(entry) > 2 else None) or f'error {entry[1]}'}"
                    for entry in response.topic_errors
                    if entry[1] not in (0, TopicAlreadyExistsError.errno)
                ]
        if refused:
            raise TopicCreationError("Kafka refused to create " + "; ".join(refused))
        return [topic.name for topic in missing]
    except KafkaConnectionError as error:
        raise ConnectionError(f"cannot reach Kafka at {bootstrap_servers}: {error}") from None
    finally:
        await admin.close()


async def describe_topics(bootstrap_servers: str, names: list[str]) -> list[TopicInfo]:
    """Partition count and status of each topic, in the order given; missing ones included."""
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap_servers))
    try:
        await admin.start()
        # List first: a metadata request naming a missing topic makes brokers with
        # auto-creation on (tansu, Kafka's default) create it, which would hide that it was missing.
        existing = set(await admin.list_topics())
        present = [name for name in names if name in existing]
        described = {t["topic"]: t for t in await admin.describe_topics(present)} if present else {}
    except KafkaConnectionError as error:
        raise ConnectionError(f"cannot reach Kafka at {bootstrap_servers}: {error}") from None
    finally:
        await admin.close()
    infos = []
    for name in names:
        topic = described.get(name)
        if topic is None:
            infos.append(TopicInfo(name, None))
        else:
            error = None if topic["error_code"] == 0 else f"error code {topic['error_code']}"
            replicas = min((len(p["replicas"]) for p in topic["partitions"]), default=None)
            infos.append(TopicInfo(name, len(topic["partitions"]), error, replicas))
    return infos


async def delete_topics(bootstrap_servers: str, names: list[str]) -> None:
    """Delete the topics; raises KafkaError when the broker refuses one."""
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap_servers))
    try:
        await admin.start()
        response = await admin.delete_topics(names)
    except KafkaConnectionError as error:
        raise ConnectionError(f"cannot reach Kafka at {bootstrap_servers}: {error}") from None
    finally:
        await admin.close()
    refused = [f"{name}: error {code}" for name, code in response.topic_error_codes if code]
    if refused:
        raise KafkaError("Kafka refused to delete " + "; ".join(refused))
