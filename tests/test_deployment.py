"""The production deployment files, checked statically: no Docker engine is needed.

docker-compose.yml must run only real `tracebus` commands with real TRACEBUS_* settings, on a
KRaft Kafka, with secrets taken from the environment; the Dockerfile must run `tracebus`."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from tracebus.cli.main import app
from tracebus.config import KafkaSettings
from tracebus.gateway.settings import GatewaySettings
from tracebus.producers.settings import ProducerSettings
from tracebus.sinks.settings import SinkSettings
from tracebus.streams.settings import StreamSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# Each secret, and the only service that may see it.
SECRETS = {
    "TRACEBUS_LANGFUSE_PUBLIC_KEY": "sink-langfuse",
    "TRACEBUS_LANGFUSE_SECRET_KEY": "sink-langfuse",
    "TRACEBUS_LANGSMITH_API_KEY": "sink-langsmith",
    "TRACEBUS_API_KEYS": "gateway",
}
SECRET_WORDS = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY|PUBLIC_KEY|PRIVATE_KEY|CREDENTIAL")
# `${VAR}` / `${VAR:-default}` / `${VAR:?message}` (and `-`, `?` without the colon).
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
REQUIRED_REFERENCE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+):\?[^}]+\}")
TRACEBUS_VARIABLE = re.compile(r"\bTRACEBUS_[A-Z0-9_]+\b")
SINK_SERVICES = ("sink-langfuse", "sink-langsmith")
# `pip install .`, `pip install ".[rocksdb]"`, …
PIP_INSTALL_PROJECT = re.compile(r"pip install (?:-\S+ )*[\"']?\.(?:\[[\w,-]+\])?[\"']?(?:\s|$)")


# -- loading ------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def with_defaults(value: object) -> str:
    """`value` as compose would see it with no variables set: `${VAR:-default}` → default."""

    def replace(match: re.Match[str]) -> str:
        op = match.group("op") or ""
        return match.group("arg") if op.endswith("-") else ""

    return REFERENCE.sub(replace, str(value))


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (merge keys already applied by the YAML loader)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → volume name or host path, from short or long volume syntax."""
    result: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            result[volume["target"]] = volume.get("source", "")
        else:
            source, target, *_ = str(volume).split(":")
            result[target] = source
    return result


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def tracebus_image() -> str:
    built = [s for s in services().values() if "build" in s]
    assert len(built) == 1, "exactly one service builds the tracebus image"
    return built[0]["image"]


def tracebus_services() -> dict[str, dict[str, Any]]:
    image = tracebus_image()
    return {name: s for name, s in services().items() if s.get("image") == image}


def kafka_service() -> tuple[str, dict[str, Any]]:
    found = [
        (name, s)
        for name, s in services().items()
        if with_defaults(s.get("image", "")).startswith("apache/kafka")
    ]
    assert len(found) == 1, "exactly one service runs the official apache/kafka image"
    return found[0]


# -- the CLI ------------------------------------------------------------------------------------


# Typer's command objects are click's or, in newer typer, its own copy of click: only their
# common interface is used (`commands` of a group, `params`, `envvar`, `make_context`).


@cache
def cli() -> Any:
    return typer.main.get_command(app)


def subcommands(command: Any) -> dict[str, Any] | None:
    """A group's subcommands by name; None for a plain command."""
    return getattr(command, "commands", None)


def walk(command: Any) -> Iterator[Any]:
    yield command
    for sub in (subcommands(command) or {}).values():
        yield from walk(sub)


@cache
def known_variables() -> frozenset[str]:
    """Every TRACEBUS_* variable tracebus reads: CLI option envvars and settings fields."""
    names: set[str] = set()
    for command in walk(cli()):
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
            elif envvar:
                names.update(envvar)
    for settings in (
        KafkaSettings,
        StreamSettings,
        SinkSettings,
        ProducerSettings,
        GatewaySettings,
    ):
        prefix = settings.model_config.get("env_prefix", "")
        assert prefix == "TRACEBUS_"
        names.update(f"{prefix}{field}".upper() for field in settings.model_fields)
    return frozenset(names)


def resolve(args: list[str]) -> tuple[list[str], Any, list[str]]:
    """`["sink", "langfuse", "--timeout", "60"]` → (["sink"], the sink command, the rest)."""
    path: list[str] = []
    current = cli()
    rest = list(args)
    while (commands := subcommands(current)) is not None:
        assert rest and not rest[0].startswith("-"), f"no subcommand in {args}"
        name = rest.pop(0)
        assert name in commands, f"`tracebus {' '.join([*path, name])}` does not exist"
        path.append(name)
        current = commands[name]
    return path, current, rest


def tracebus_commands() -> list[tuple[str, list[str]]]:
    return [(name, command(s)) for name, s in tracebus_services().items()]


# -- compose: structure ---------------------------------------------------------------------------


def test_compose_parses_with_the_expected_services() -> None:
    assert set(services()) >= {
        "kafka",
        "topics",
        "stream",
        "sink-langfuse",
        "sink-langsmith",
        "sink-jsonl",
        "gateway",
    }
    assert "x-tracebus-env" in compose(), "the shared environment is a YAML anchor"
    for name, service in services().items():
        assert "image" in service or "build" in service, name


def test_every_tracebus_service_runs_an_existing_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [key for key in os.environ if key.startswith("TRACEBUS_")]:
        monkeypatch.delenv(key)  # only the command line is checked here
    runner = CliRunner()
    commands = tracebus_commands()
    expected = {"topics", "stream", *SINK_SERVICES, "sink-jsonl", "gateway"}
    assert {name for name, _ in commands} >= expected
    for name, args in commands:
        path, leaf, rest = resolve(args)
        assert path, f"{name}: {args} names no command"
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, f"{name}: tracebus {' '.join(path)} --help\n{result.output}"
        # The whole command line parses: arguments are valid choices (the sink destination),
        # options are spelled right and their values valid. Nothing runs.
        try:
            context = leaf.make_context(f"tracebus {' '.join(path)}", list(rest))
        except Exception as error:
            pytest.fail(f"{name}: `tracebus {' '.join(args)}` does not parse: {error}")
        for param in leaf.params:
            if param.param_type_name == "argument":
                value = str(context.params[param.name])
                assert value in rest, f"{name}: argument {param.name} not given"
                assert re.search(rf"\b{re.escape(value)}\b", result.output), (
                    f"{name}: {value!r} is not among the choices in the help"
                )


def test_every_tracebus_variable_is_a_real_setting() -> None:
    used = set(TRACEBUS_VARIABLE.findall(COMPOSE_FILE.read_text()))
    assert used, "the compose file configures tracebus through TRACEBUS_* variables"
    unknown = sorted(used - known_variables())
    assert not unknown, f"not tracebus settings or CLI variables: {unknown}"


def test_secrets_come_only_from_the_environment() -> None:
    text = COMPOSE_FILE.read_text()
    for service_name, service in services().items():
        for key, value in environment(service).items():
            if SECRET_WORDS.search(key):
                match = REQUIRED_REFERENCE.fullmatch(value)
                assert match and match.group("name") == key, (
                    f"{service_name}: {key} must be exactly ${{{key}:?…}}, not {value!r}"
                )
    for name in SECRETS:
        assert re.search(rf"\$\{{{name}:\?[^}}]+\}}", text), f"{name} is a required variable"
        # Never a default value, never a literal assignment anywhere in the file.
        assert not re.search(rf"\$\{{{name}:?-", text), f"{name} has a default"
        for line in text.splitlines():
            stripped = line.split("#", 1)[0].strip()
            if re.match(rf"-?\s*{name}\s*[:=]", stripped):
                assert REQUIRED_REFERENCE.search(stripped), f"literal secret: {line.strip()}"


def test_secrets_reach_only_their_sink() -> None:
    for service_name, service in services().items():
        for key in environment(service):
            if key in SECRETS:
                assert service_name == SECRETS[key], f"{key} leaks into {service_name}"
    for key, owner in SECRETS.items():
        assert key in environment(services()[owner]), f"{owner} lacks {key}"


# -- compose: Kafka -------------------------------------------------------------------------------


def test_kafka_runs_in_kraft_mode() -> None:
    name, kafka = kafka_service()
    env = {key: with_defaults(value) for key, value in environment(kafka).items()}
    assert "KAFKA_PROCESS_ROLES" in env, "KRaft mode is set by KAFKA_PROCESS_ROLES"
    assert {"broker", "controller"} <= set(env["KAFKA_PROCESS_ROLES"].split(","))
    node_id = env["KAFKA_NODE_ID"]
    assert f"{node_id}@{name}:" in env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert env.get("CLUSTER_ID"), "KRaft storage needs a cluster id"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert f"{controller}://" in env["KAFKA_LISTENERS"]
    assert f"{controller}:" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    # Clients on the compose network reach the broker by its service name.
    assert f"://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert controller not in env["KAFKA_ADVERTISED_LISTENERS"]
    assert not any("ZOOKEEPER" in key for key in env)
    for service_name, service in services().items():
        assert "zookeeper" not in service_name.lower()
        assert "zookeeper" not in str(service.get("image", "")).lower()


def test_kafka_keeps_its_log_on_a_named_volume_and_has_a_healthcheck() -> None:
    _, kafka = kafka_service()
    log_dir = environment(kafka)["KAFKA_LOG_DIRS"]
    named = set(compose().get("volumes") or {})
    assert mounts(kafka).get(log_dir) in named, f"{log_dir} is not on a named volume"
    test = kafka["healthcheck"]["test"]
    test = " ".join(test) if isinstance(test, list) else test
    assert re.search(r"/opt/kafka/bin/kafka-[a-z-]+\.sh", test), "use Kafka's own scripts"
    assert kafka.get("restart") in ("always", "unless-stopped")


# -- compose: ordering, scaling, state ------------------------------------------------------------


def test_topics_run_once_after_kafka_is_healthy_and_everything_waits_for_them() -> None:
    kafka_name, _ = kafka_service()
    topics = services()["topics"]
    assert command(topics)[:2] == ["topics", "create"]
    assert topics["depends_on"][kafka_name]["condition"] == "service_healthy"
    restart = str(topics.get("restart", "no"))
    assert restart in ("no", "False") or restart.startswith("on-failure"), "a one-shot job"
    for name, service in tracebus_services().items():
        if name == "topics":
            continue
        condition = service["depends_on"]["topics"]["condition"]
        assert condition == "service_completed_successfully", name
        assert service.get("restart") in ("always", "unless-stopped"), f"{name}: restart"


def test_sinks_are_replicated() -> None:
    for name in SINK_SERVICES:
        replicas = services()[name]["deploy"]["replicas"]
        assert int(with_defaults(replicas)) >= 2, name
        assert command(services()[name])[:2] == ["sink", name.removeprefix("sink-")]
        assert "ports" not in services()[name], f"{name}: replicas cannot share a host port"


def test_stream_keeps_rocksdb_state_on_a_volume_and_serves_metrics() -> None:
    stream = services()["stream"]
    env = environment(stream)
    assert env["TRACEBUS_STORE"] == "rocksdb"
    assert int(with_defaults(env["TRACEBUS_METRICS_PORT"])) > 0
    named = set(compose().get("volumes") or {})
    assert mounts(stream).get(with_defaults(env["TRACEBUS_DATA_DIR"])) in named


def test_jsonl_sink_writes_to_a_volume() -> None:
    jsonl = services()["sink-jsonl"]
    assert command(jsonl)[:2] == ["sink", "jsonl"]
    named = set(compose().get("volumes") or {})
    assert mounts(jsonl).get(with_defaults(environment(jsonl)["TRACEBUS_JSONL_DIR"])) in named


def test_gateway_publishes_port_4318_with_keys_and_a_healthcheck_on_healthz() -> None:
    gateway = services()["gateway"]
    assert command(gateway)[:1] == ["gateway"]
    env = {key: with_defaults(value) for key, value in environment(gateway).items()}
    port = env["TRACEBUS_PORT"]
    assert port == "4318", "OTLP/HTTP's port: OTel exporters default to it"
    published = [with_defaults(mapping).rsplit(":", 2) for mapping in gateway["ports"]]
    assert [(host_port, container_port) for _, host_port, container_port in published] == [
        ("4318", port)
    ]
    # Keys only: anonymous requests are for `tracebus up`, never a deployment.
    assert "TRACEBUS_ALLOW_ANONYMOUS" not in env
    assert "--allow-anonymous" not in command(gateway)
    test = " ".join(gateway["healthcheck"]["test"])
    assert "/healthz" in test and "TRACEBUS_PORT" in test
    assert "replicas" not in gateway.get("deploy", {}), "replicas cannot share a host port"


@pytest.mark.parametrize("name", ["stream", *SINK_SERVICES, "sink-jsonl", "gateway"])
def test_default_settings_are_valid(name: str) -> None:
    """With no variables set, each worker's environment passes its settings validation."""
    settings = {"stream": StreamSettings, "gateway": GatewaySettings}.get(name, SinkSettings)
    env = environment(services()[name])
    fields = {
        key.removeprefix("TRACEBUS_").lower(): with_defaults(value)
        for key, value in env.items()
        if key.removeprefix("TRACEBUS_").lower() in settings.model_fields
    }
    settings(**fields)


@pytest.mark.parametrize("name", ["stream", *SINK_SERVICES, "sink-jsonl"])
def test_compose_waits_out_a_workers_whole_stop_before_killing_it(name: str) -> None:
    """A worker's stop is bound by its stop timeout; compose's grace period is longer, so the
    worker commits and leaves its group on its own."""
    service = services()[name]
    stop_timeout = float(with_defaults(environment(service)["TRACEBUS_STOP_TIMEOUT_S"]))
    grace = service["stop_grace_period"]
    assert grace.endswith("s") and float(grace.removesuffix("s")) > stop_timeout


# -- Dockerfile -----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"use the exec (JSON) form: {arguments}"
    return value


def test_dockerfile_runs_tracebus_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    bases = [arguments.split()[0] for keyword, arguments in instructions if keyword == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    assert any(
        keyword == "RUN" and PIP_INSTALL_PROJECT.search(arguments)
        for keyword, arguments in instructions
    ), "the project is installed with `pip install .`"
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (entrypoint,) = [exec_form(a) for keyword, a in instructions if keyword == "ENTRYPOINT"]
    assert entrypoint == ["tracebus"]
    cmds = [exec_form(a) for keyword, a in instructions if keyword == "CMD"]
    assert cmds[-1] == ["--help"]


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()} - {""}
    assert {".git", ".venv", ".env"} <= patterns
    assert not {"README.md", "pyproject.toml", "tracebus"} & patterns, "the build needs these"
