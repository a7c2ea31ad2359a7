"""Topic creation and description through the Kafka admin API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int | None  # None: the topic does not exist
    error: str | None = None


async def _accepts_connections(bootstrap_servers: str) -> bool:
    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    try:
        _, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
    except OSError:
        return False
    writer.close()
    return True


async def wait_for_broker(bootstrap_servers: str, timeout: float) -> None:
    """Return once the broker answers a metadata request; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not await _accepts_connections(bootstrap_servers):
            # Probing the port first keeps the Kafka client from logging every refused attempt.
            await asyncio.sleep(0.05)
            continue
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
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


async def create_topics(bootstrap_servers: str, partitions: dict[str, int]) -> list[str]:
    """Create the missing topics; returns the names created. Existing topics are left alone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, count, replication_factor=1)
            for name, count in partitions.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        return [topic.name for topic in missing]
    except KafkaConnectionError as error:
        raise ConnectionError(f"cannot reach Kafka at {bootstrap_servers}: {error}") from None
    finally:
        await admin.close()


async def describe_topics(bootstrap_servers: str, names: list[str]) -> list[TopicInfo]:
    """Partition count and status of each topic, in the order given; missing ones included."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
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
            infos.append(TopicInfo(name, len(topic["partitions"]), error))
    return infos
