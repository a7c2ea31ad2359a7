"""`tracebus backfill`: archived trace documents (the jsonl sink's files) delivered to a
destination, the highest revision of each trace once, idempotently."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from cli_helpers import interrupted_mid_delivery
from conftest import fresh_settings
from sink_helpers import START, document, of_project, project_standins
from standins.langfuse import LangfuseStandIn
from typer.testing import CliRunner, Result

from tracebus.cli.main import app
from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker
from tracebus.schemas import TraceDocument

KEYS = {"TRACEBUS_LANGFUSE_PUBLIC_KEY": "pk-lf-test", "TRACEBUS_LANGFUSE_SECRET_KEY": "sk-lf-test"}


def run_backfill(
    standin: LangfuseStandIn, settings: KafkaSettings, *args: str, **env: str
) -> Result:
    env = {**settings.worker_env(), "TRACEBUS_LANGFUSE_HOST": standin.url, **KEYS, **env}
    return CliRunner().invoke(app, ["backfill", "langfuse", *args], env={"COLUMNS": "200", **env})


def line(document: TraceDocument) -> bytes:
    """A document as the jsonl sink writes it."""
    return document.model_dump_json(exclude_none=True).encode() + b"\n"


def started_at(document: TraceDocument, offset_s: int) -> TraceDocument:
    summary = document.summary.model_copy(update={"start_time_unix_nano": START + offset_s * 10**9})
    return document.model_copy(update={"summary": summary})


def topics(settings: KafkaSettings) -> list[str]:
    async def listed() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(listed())


def test_a_backfill_delivers_the_newest_revision_of_each_trace_and_names_unreadable_lines(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    first = document("first", input_value="revision 1")
    root = first.observations[0].model_copy(update={"input": "revision 2"})
    newer = first.model_copy(update={"revision": 2, "observations": [root]})
    second, third = document("second"), document("third")
    archive = tmp_path / "archive"
    archive.mkdir()
    # Two files as two sink processes would write them; the newer revision in the earlier file.
    (archive / "traces-20261101T000000Z-1-0001.jsonl").write_bytes(
        line(newer) + line(second) + b'{"schema_version": 1, "trace_id": \n' + b"\n"
    )
    (archive / "traces-20261101T000000Z-2-0001.jsonl").write_bytes(
        line(first) + line(third) + line(second) + b'{"schema_version": 2}\n'
    )
    (archive / "notes.txt").write_text("not part of the archive")
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        standin.fail_next(503, count=2, endpoint="traces")
        result = run_backfill(standin, settings, str(archive))
    assert result.exit_code == 1, result.output
    spans = {span.key.trace_id: span for span in standin.spans}
    assert set(spans) == {first.trace_id, second.trace_id, third.trace_id}
    assert spans[first.trace_id].attributes["langfuse.observation.input"] == "revision 2"
    assert set(standin.receipts.values()) == {1}
    assert "backfilled langfuse: 3 delivered" in result.output
    assert re.search(r"earlier revisions and copies +│ 2 ", result.output)
    unreadable = [row for row in result.output.splitlines() if row.startswith("unreadable: ")]
    assert len(unreadable) == 2
    assert unreadable[0].startswith(
        f"unreadable: {archive}/traces-20261101T000000Z-1-0001.jsonl:3: not a trace document: "
        "<record>: malformed JSON"
    )
    assert unreadable[1].startswith(
        f"unreadable: {archive}/traces-20261101T000000Z-2-0001.jsonl:4: not a trace document: "
        "schema_version: unsupported schema_version 2; this build reads version 1"
    )
    assert "2 line(s) of the archive are not trace documents" in result.output
    assert not [topic for topic in topics(settings) if ".backfill-" in topic]


def test_a_second_backfill_replaces_what_the_first_delivered(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    documents = [document(f"t-{i}") for i in range(30)]
    archive = tmp_path / "traces.jsonl"
    archive.write_bytes(b"".join(map(line, documents)))
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        results = [run_backfill(standin, settings, str(archive)) for _ in range(2)]
    assert [r.exit_code for r in results] == [0, 0], [r.output for r in results]
    assert len(standin.spans) == 30
    assert set(standin.receipts.values()) == {2}


def test_a_backfill_takes_the_traces_of_its_time_range_and_project_through_its_route(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    before = started_at(of_project("before", "shop"), 0)
    during = [started_at(of_project(f"during-{i}", "shop"), 3600) for i in range(3)]
    other = started_at(of_project("other", "ops"), 3600)
    after = started_at(of_project("after", "shop"), 7200)
    archive = tmp_path / "traces.jsonl"
    archive.write_bytes(b"".join(map(line, [before, *during, other, after])))
    routes = tmp_path / "routes.toml"
    since, until = (datetime.fromtimestamp(START / 1e9 + s, UTC) for s in (1800, 5400))
    window = ["--since", since.isoformat(), "--until", until.isoformat()]
    with (
        LangfuseStandIn("pk-lf-test", "sk-lf-test") as own,
        project_standins(routes, "shop") as (shop,),
    ):
        result = run_backfill(
            own,
            settings,
            str(archive),
            "--project",
            "shop",
            *window,
            TRACEBUS_ROUTES_FILE=str(routes),
        )
    assert result.exit_code == 0, result.output
    assert {span.key.trace_id for span in shop.spans} == {d.trace_id for d in during}
    assert own.spans == []
    assert re.search(r"out of the time range or project +│ 3 ", result.output)


def test_an_interrupted_backfill_resumes_where_it_stopped(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Ctrl-C or SIGTERM: what is in flight ends (within the drain timeout), what was delivered
    is committed, and the topic stays for --resume, which delivers the rest, each trace once."""
    settings = fresh_settings(broker.bootstrap_servers)
    documents = [document(f"t-{i}") for i in range(500)]
    archive = tmp_path / "traces.jsonl"
    archive.write_bytes(b"".join(map(line, documents)))
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        env = {**settings.worker_env(), "TRACEBUS_LANGFUSE_HOST": standin.url, **KEYS}
        code, stderr = interrupted_mid_delivery(
            standin, 20, "backfill", "langfuse", str(archive), env=env
        )
        delivered_before = len(standin.spans)
        assert code == 130, stderr
        [topic] = re.findall(r"--resume (\S+)` goes on from there", stderr)
        assert topic in topics(settings)
        resumed = run_backfill(standin, settings, "--resume", topic)
    assert resumed.exit_code == 0, resumed.output
    assert 20 <= delivered_before < 500
    assert {span.key.trace_id for span in standin.spans} == {d.trace_id for d in documents}
    assert set(standin.receipts.values()) == {1}
    assert topic not in topics(settings)


def test_a_backfill_names_its_archive_or_resumes_one_and_not_both(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    archive = tmp_path / "traces.jsonl"
    archive.write_bytes(line(document("t")))
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        neither = run_backfill(standin, settings)
        both = run_backfill(standin, settings, str(archive), "--resume", "some-topic")
        narrowed = run_backfill(standin, settings, "--resume", "some-topic", "--since", "1d")
    assert [r.exit_code for r in (neither, both, narrowed)] == [2, 2, 2]
    assert "name the archive to read, or --resume" in neither.output
    assert "--resume goes on with the interrupted backfill's own choice" in narrowed.output
