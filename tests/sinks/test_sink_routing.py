"""A sink delivers each trace to its project's destination (a routes file), the others to its
own destination, or dead-letters them when it has none: real workers, real broker, stand-ins
that accept only their own project's credentials."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import eventually, fresh_settings
from sink_helpers import (
    SinkProcess,
    dead_letters,
    delivered_traces,
    document,
    of_project,
    project_standins,
    publish,
    send_records,
    sink_group,
)
from standins.langfuse import LangfuseStandIn
from standins.langsmith import LangSmithStandIn
from streams.stream_helpers import metric
from typer.testing import CliRunner

from tracebus.cli.main import app as cli
from tracebus.cli.sink import ROUTE_SETTINGS, Destination, unconfigured
from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.broker import free_port
from tracebus.ops import group_statuses, list_dead_letters
from tracebus.sinks.routing import RoutesError, load_routes


def routes_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def caught_up(settings: KafkaSettings, *projects: str | None) -> bool:
    """Whether the sink's group of each project's route (None: its own) has read everything."""
    groups = [
        sink_group(settings) + ("" if project is None else f".{project}") for project in projects
    ]
    statuses = {s.group: s for s in asyncio.run(group_statuses(settings, extra_groups=groups))}
    return all(statuses[group].has_commits and statuses[group].lag == 0 for group in groups)


def dead_letter_count(settings: KafkaSettings) -> int:
    page = asyncio.run(
        list_dead_letters(settings.bootstrap_servers, settings.dead_letter_topic, limit=100)
    )
    return page.in_topic


def failing(port: int, project: str) -> float:
    labels = f'destination="langfuse",project="{project}"'
    return metric(port, f"tracebus_sink_destination_failing{{{labels}}}")


def test_each_projects_traces_reach_its_own_langfuse_project_and_the_rest_the_sinks_own(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    shop = [of_project(f"shop-{i}", "shop") for i in range(3)]
    ops = [of_project(f"ops-{i}", "ops") for i in range(2)]
    rest = [of_project("unlisted", "billing"), of_project("no-project", None)]
    routes = tmp_path / "routes.toml"
    with (
        project_standins(routes, "shop", "ops") as (shop_standin, ops_standin),
        LangfuseStandIn("pk-own", "sk-own") as own_standin,
    ):
        publish(settings, [*shop, *rest, *ops])  # one batch mixes every project
        worker = SinkProcess(
            "langfuse",
            settings,
            tmp_path,
            TRACEBUS_LANGFUSE_HOST=own_standin.url,
            TRACEBUS_LANGFUSE_PUBLIC_KEY="pk-own",
            TRACEBUS_LANGFUSE_SECRET_KEY="sk-own",
            TRACEBUS_ROUTES_FILE=str(routes),
            TRACEBUS_LINGER_MS="500",
        )
        try:
            standins = (shop_standin, ops_standin, own_standin)
            eventually(
                lambda: sum(len(delivered_traces(s)) for s in standins) == 7, 60, "all 7 traces"
            )
        finally:
            assert worker.stop() == 0, worker.log_tail()
    assert delivered_traces(shop_standin) == {d.trace_id for d in shop}
    assert delivered_traces(ops_standin) == {d.trace_id for d in ops}
    assert delivered_traces(own_standin) == {d.trace_id for d in rest}
    # Each stand-in refuses other credentials: no request needed another project's keys.
    assert all(r.status == 200 for s in standins for r in s.requests)


def test_traces_of_a_project_without_a_destination_are_dead_lettered_and_the_others_delivered(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    shop = [of_project(f"shop-{i}", "shop") for i in range(4)]
    unrouted = [of_project("ops", "ops"), of_project("none", None)]
    routes = tmp_path / "routes.toml"
    with project_standins(routes, "shop") as (standin,):
        publish(settings, [shop[0], unrouted[0], *shop[1:3], unrouted[1], shop[3]])
        worker = SinkProcess(
            "langfuse",
            settings,
            tmp_path,
            TRACEBUS_ROUTES_FILE=str(routes),
            TRACEBUS_LINGER_MS="500",
        )
        try:
            letters = dead_letters(settings, 2)
            shops = {d.trace_id for d in shop}
            eventually(lambda: delivered_traces(standin) == shops, 30, "shop's traces")
        finally:
            assert worker.stop() == 0, worker.log_tail()
    reasons = {r.key.decode(): dict(r.headers)["tracebus-reason"].decode() for r in letters}
    assert reasons == {
        unrouted[0].trace_id: "no destination for traces of project 'ops': the routes file "
        "names no such project and the sink has no destination of its own",
        unrouted[1].trace_id: "no destination for traces of no project: the routes file "
        "names no such project and the sink has no destination of its own",
    }
    # Each keeps its project, so a redrive reaches the project's route once it has one.
    projects = {r.key.decode(): dict(r.headers).get("tracebus-project") for r in letters}
    assert projects == {unrouted[0].trace_id: b"ops", unrouted[1].trace_id: None}


def test_one_projects_retries_and_rejections_leave_the_others_delivered(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    shop = [of_project(f"shop-{i}", "shop") for i in range(3)]
    huge = document("huge", input_value="x" * 400_000).model_copy(update={"project": "shop"})
    ops = [of_project(f"ops-{i}", "ops") for i in range(3)]
    routes = tmp_path / "routes.toml"
    with project_standins(routes, "shop", "ops", max_body_bytes=200_000) as (
        shop_standin,
        ops_standin,
    ):
        shop_standin.fail_next(503, endpoint="traces")
        publish(settings, [*ops[:2], shop[0], huge, *shop[1:], ops[2]])
        worker = SinkProcess(
            "langfuse",
            settings,
            tmp_path,
            TRACEBUS_ROUTES_FILE=str(routes),
            TRACEBUS_LINGER_MS="1000",
        )
        try:
            [letter] = dead_letters(settings, 1)
            expected = {d.trace_id for d in shop}, {d.trace_id for d in ops}
            eventually(
                lambda: (delivered_traces(shop_standin), delivered_traces(ops_standin)) == expected,
                30,
                "every other trace at its project's stand-in",
            )
        finally:
            assert worker.stop() == 0, worker.log_tail()
    # The 503 retried the whole batch; the 413 was bisected down to the one trace.
    assert shop_standin.requests[0].status == 503
    assert letter.key == huge.trace_id.encode()
    assert dict(letter.headers)["tracebus-status"] == b"413"


def test_a_project_whose_destination_is_down_holds_back_no_other_project(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    shop = [of_project(f"shop-{i}", "shop") for i in range(3)]
    ops = [of_project(f"ops-{i}", "ops") for i in range(3)]
    port, routes = free_port(), tmp_path / "routes.toml"
    with project_standins(routes, "shop", "ops") as (shop_standin, ops_standin):
        worker = SinkProcess(
            "langfuse",
            settings,
            tmp_path,
            TRACEBUS_ROUTES_FILE=str(routes),
            TRACEBUS_METRICS_PORT=str(port),
        )
        try:
            with shop_standin.down():
                publish(settings, [shop[0], ops[0], shop[1], ops[1], shop[2], ops[2]])
                eventually(
                    lambda: delivered_traces(ops_standin) == {d.trace_id for d in ops},
                    30,
                    "ops's traces while shop's destination is down",
                )
                eventually(lambda: failing(port, "shop") == 1, 30, "shop's route failing")
                assert failing(port, "ops") == 0
                eventually(lambda: caught_up(settings, "ops"), 30, "ops's group at the end")
                assert not caught_up(settings, "shop")
            eventually(
                lambda: delivered_traces(shop_standin) == {d.trace_id for d in shop},
                30,
                "shop's traces once its destination is back",
            )
            eventually(lambda: failing(port, "shop") == 0, 30, "shop's route delivering again")
        finally:
            assert worker.stop() == 0, worker.log_tail()
    log = worker.log_path.read_text()
    assert "shop" in log and not any(secret in log for secret in ("sk-shop", "sk-ops"))


def test_routed_sinks_share_each_projects_partitions_and_a_killed_one_loses_nothing(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    shop = [of_project(f"shop-{i}", "shop") for i in range(20)]
    ops = [of_project(f"ops-{i}", "ops") for i in range(20)]
    routes = tmp_path / "routes.toml"
    groups = [f"{sink_group(settings)}.{project}" for project in ("shop", "ops")]

    def members() -> list[int | None]:
        statuses = {s.group: s for s in asyncio.run(group_statuses(settings, extra_groups=groups))}
        return [statuses[group].members for group in groups]

    with project_standins(routes, "shop", "ops") as (shop_standin, ops_standin):
        workers = [
            SinkProcess("langfuse", settings, tmp_path, TRACEBUS_ROUTES_FILE=str(routes))
            for _ in range(2)
        ]
        try:
            publish(settings, [*shop[:10], *ops[:10]])
            eventually(lambda: members() == [2, 2], 60, "both workers in each project's group")
            workers[0].kill()
            publish(settings, [*shop[10:], *ops[10:]])
            eventually(
                lambda: (
                    (delivered_traces(shop_standin), delivered_traces(ops_standin))
                    == ({d.trace_id for d in shop}, {d.trace_id for d in ops})
                ),
                60,
                "every trace at its project's stand-in after the kill",
            )
        finally:
            assert workers[1].stop() == 0, workers[1].log_tail()
    # Re-delivered after the kill at most, one row per span at each destination.
    assert len(shop_standin.spans) == len(shop) and len(ops_standin.spans) == len(ops)


def test_a_new_route_starts_where_the_sinks_own_group_is_instead_of_redelivering_the_topic(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    before, after = of_project("shop-before", "shop"), of_project("shop-after", "shop")
    routes = tmp_path / "routes.toml"
    with (
        project_standins(routes, "shop") as (shop_standin,),
        LangfuseStandIn("pk-own", "sk-own") as own_standin,
    ):
        own = {
            "TRACEBUS_LANGFUSE_HOST": own_standin.url,
            "TRACEBUS_LANGFUSE_PUBLIC_KEY": "pk-own",
            "TRACEBUS_LANGFUSE_SECRET_KEY": "sk-own",
        }
        publish(settings, [before])
        worker = SinkProcess("langfuse", settings, tmp_path, **own)
        try:
            eventually(lambda: caught_up(settings, None), 30, "the sink's group at the end")
        finally:
            assert worker.stop() == 0, worker.log_tail()
        publish(settings, [after])
        own["TRACEBUS_ROUTES_FILE"] = str(routes)
        worker = SinkProcess("langfuse", settings, tmp_path, **own)
        try:
            eventually(lambda: caught_up(settings, None, "shop"), 30, "both groups at the end")
        finally:
            assert worker.stop() == 0, worker.log_tail()
    assert delivered_traces(own_standin) == {before.trace_id}
    assert delivered_traces(shop_standin) == {after.trace_id}


def test_an_unreadable_record_is_dead_lettered_once_not_once_per_route(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    shop, ops = of_project("shop", "shop"), of_project("ops", "ops")
    routes = tmp_path / "routes.toml"
    with project_standins(routes, "shop", "ops") as (shop_standin, ops_standin):
        send_records(settings, [(b"unreadable", b"{not json")])
        publish(settings, [shop, ops])
        worker = SinkProcess("langfuse", settings, tmp_path, TRACEBUS_ROUTES_FILE=str(routes))
        try:
            eventually(
                lambda: caught_up(settings, None, "shop", "ops"), 30, "every group at the end"
            )
        finally:
            assert worker.stop() == 0, worker.log_tail()
        assert delivered_traces(shop_standin) == {shop.trace_id}
        assert delivered_traces(ops_standin) == {ops.trace_id}
    [letter] = dead_letters(settings, 1)
    assert letter.key == b"unreadable"
    assert dead_letter_count(settings) == 1


def test_a_langsmith_route_names_the_projects_own_langsmith_project(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    shop, plain = of_project("shop-trace", "shop"), of_project("plain-trace", None)
    with LangSmithStandIn() as standin:
        routes = routes_file(
            tmp_path / "routes.toml", '[projects.shop]\nlangsmith_project = "shop-runs"\n'
        )
        publish(settings, [shop, plain])
        worker = SinkProcess(
            "langsmith",
            settings,
            tmp_path,
            TRACEBUS_LANGSMITH_ENDPOINT=standin.url,
            TRACEBUS_LANGSMITH_API_KEY=standin.api_key,
            TRACEBUS_LANGSMITH_PROJECT="everything-else",
            TRACEBUS_ROUTES_FILE=str(routes),
        )
        try:
            eventually(lambda: len(standin.runs) == 2, 60, "both root runs")
        finally:
            assert worker.stop() == 0, worker.log_tail()
    sessions = {run["name"]: run["session_name"] for run in standin.runs.values()}
    assert sessions == {"shop-trace": "shop-runs", "plain-trace": "everything-else"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[projects.shop]\nlangfuse_secret = 'x'\n", "projects.shop: unknown ['langfuse_secret']"),
        ("[projects.shop]\nlangfuse_public_key = 3\n", "every setting must be a string"),
        ("[projects]\n", "expected only [projects.<name>] tables"),
        ("routes = 1\n[projects.shop]\nlangsmith_project = 'x'\n", "expected only"),
        ("[projects.shop\n", "cannot read routes file"),
    ],
)
def test_a_routes_file_that_cannot_be_used_is_refused_with_the_reason(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = routes_file(tmp_path / "routes.toml", text)
    with pytest.raises(RoutesError) as refused:
        load_routes(path, ROUTE_SETTINGS)
    assert problem in str(refused.value)
    result = CliRunner().invoke(cli, ["sink", "langfuse", "--routes", str(path)])
    assert result.exit_code == 2
    assert problem in " ".join(result.output.split())


def test_a_route_without_the_credentials_its_destination_needs_is_refused(tmp_path: Path) -> None:
    path = routes_file(tmp_path / "routes.toml", "[projects.shop]\nlangsmith_project = 'x'\n")
    result = CliRunner().invoke(cli, ["sink", "langfuse", "--routes", str(path)])
    assert result.exit_code == 2
    assert (
        "project shop: langfuse needs langfuse_public_key and langfuse_secret_key in the routes "
        "file" in " ".join(result.output.split())
    )


def test_a_routes_file_configures_a_sink_when_every_project_has_or_inherits_its_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ROUTE_SETTINGS:
        monkeypatch.delenv(f"TRACEBUS_{name.upper()}", raising=False)
    path = routes_file(
        tmp_path / "routes.toml",
        "[projects.shop]\nlangfuse_public_key = 'pk'\nlangfuse_secret_key = 'sk'\n"
        "[projects.ops]\nlangsmith_project = 'ops-runs'\n",
    )
    assert unconfigured(Destination.LANGFUSE) == (
        "no TRACEBUS_LANGFUSE_PUBLIC_KEY and TRACEBUS_LANGFUSE_SECRET_KEY"
    )
    monkeypatch.setenv("TRACEBUS_ROUTES_FILE", str(path))
    assert unconfigured(Destination.LANGFUSE) == (
        "no TRACEBUS_LANGFUSE_PUBLIC_KEY and TRACEBUS_LANGFUSE_SECRET_KEY, nor langfuse "
        f"credentials for ['ops'] in {path}"
    )
    monkeypatch.setenv("TRACEBUS_LANGSMITH_API_KEY", "ls-key")
    assert unconfigured(Destination.LANGSMITH) is None  # every route uses the sink's own key
    routes_file(path, "[projects.shop]\nlangfuse_public_key = 'pk'\nlangfuse_secret_key = 'sk'\n")
    assert unconfigured(Destination.LANGFUSE) is None
