"""Langfuse's legacy batch ingestion (`POST /api/public/ingestion`), the endpoint Dify's Langfuse
integration and Langfuse's v2 SDKs write to and a Langfuse v4 server refuses; through tracebus
those traces reach Langfuse over OTLP.

Requests are answered as Langfuse answers them: 207 with `successes` and per-event `errors`,
request-level failures with `{"message": ...}`. Langfuse's validation is reproduced, including
what its worker drops later out of the sender's sight (annotation scores without a config), so
the sender learns of it. Where Langfuse would report success and silently drop an event, the
gateway keeps it instead:

- a `trace-create` or `score-create` without `body.id` gets an id derived from the envelope id
  (a retried batch maps to the same trace or score);
- a legacy `observation-create` without `body.id` likewise;
- an observation without `traceId` (Langfuse SDKs before 2.0) is a trace of its own, with an id
  derived from the observation id, like the wrapper trace Langfuse makes for it.

Two things tracebus cannot represent are refused per event with the reason: updates without
`traceId` (the gateway keeps no state to find the observation's trace) and scores of sessions or
dataset runs (tracebus scores belong to a trace). `sdk-log` events are validated and, as in
Langfuse, reported in neither list.

Identifiers become W3C ids deterministically: a UUID or 32-hex trace id is its 32 hex digits,
a 16-hex observation id stays as it is (what Langfuse's OTel SDKs send), anything else is
hashed and the original kept in metadata (`langfuse_trace_id`, `langfuse_observation_id`).
Every event id is derived from the envelope id, type and body id, so a retried batch is applied
once. Langfuse-only fields (version, public, external id, prompt, observation environment,
score config) are kept in metadata under `langfuse_*` keys; "" in an optional text field means
"not set", as Dify sends it; list and object model parameters (`stop`) become their JSON text.

Usage: Langfuse keys are exclusive (`input` excludes `input_cached_tokens`) and the parts are
summed into the contract's inclusive buckets, the way Langfuse itself totals input and output;
OpenAI-shaped `usageDetails` are first read as Langfuse reads them. Counts in a unit other than
tokens (Dify's suggested questions count characters) go to `other` with the unit in the key.
"""

from __future__ import annotations

import calendar
import hashlib
import importlib.metadata
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from tracebus.gateway.protocol import Adapter, Call, GatewayError, Route
from tracebus.sinks.langfuse.details import (
    INPUT_AUDIO,
    INPUT_CACHE_CREATION,
    INPUT_CACHED,
    OUTPUT_AUDIO,
    OUTPUT_REASONING,
)

INGESTION_PATH = "/api/public/ingestion"
HEALTH_PATH = "/api/public/health"
PROJECTS_PATH = "/api/public/projects"
INVALID = "Invalid request data"
_VERSION = importlib.metadata.version("tracebus")

_CREATES = {
    "span-create": "span",
    "generation-create": "generation",
    "event-create": "event",
    "agent-create": "agent",
    "tool-create": "tool",
    "chain-create": "chain",
    "retriever-create": "retriever",
    "evaluator-create": "evaluator",
    "embedding-create": "embedding",
    "guardrail-create": "guardrail",
}
# A span-update carries no kind: Langfuse uses it on agents, tools and the like too.
_UPDATES = {"span-update": None, "generation-update": "generation"}
_LEGACY = ("observation-create", "observation-update")
_LEGACY_TYPES = ("GENERATION", "SPAN", "EVENT")
_EVENT_TYPES = (
    "trace-create",
    "score-create",
    *_CREATES,
    *_UPDATES,
    "sdk-log",
    "dataset-run-item-create",
    *_LEGACY,
)
_LEVELS = ("DEBUG", "DEFAULT", "WARNING", "ERROR")
_UNITS = ("CHARACTERS", "TOKENS", "SECONDS", "MILLISECONDS", "IMAGES", "REQUESTS")
_SCORE_SOURCES = ("API", "EVAL", "ANNOTATION")
_SCORE_TYPES = ("NUMERIC", "CATEGORICAL", "BOOLEAN", "CORRECTION", "TEXT")
_TEXT_SCORE_MAX_LENGTH = 500
_TRACE_NAME_MAX_LENGTH = 1000
_ID_MAX_LENGTH = 800

# zod's `z.iso.datetime({offset: true})`: seconds optional, any fraction, Z or ±HH:MM.
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(?:(Z)|([+-])(\d{2}):(\d{2}))"
)
# Matched in full (`fullmatch`), so that a trailing newline is no part of an id.
_HEX_UUID = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_CONTRACT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_LEADING_INT = re.compile(r"^\s*([+-]?\d+)")

# Langfuse's exclusive keys for the parts the contract has buckets for, with the names its
# integrations use besides the ones tracebus's Langfuse sink writes.
_USAGE_PARTS = {
    INPUT_CACHED: "input_cache_read_tokens",
    "input_cache_read": "input_cache_read_tokens",
    "input_cache_read_tokens": "input_cache_read_tokens",
    "cache_read_input_tokens": "input_cache_read_tokens",
    INPUT_CACHE_CREATION: "input_cache_creation_tokens",
    "input_cache_creation_tokens": "input_cache_creation_tokens",
    "input_cache_write": "input_cache_creation_tokens",
    "cache_creation_input_tokens": "input_cache_creation_tokens",
    INPUT_AUDIO: "input_audio_tokens",
    "input_audio": "input_audio_tokens",
    OUTPUT_REASONING: "output_reasoning_tokens",
    "output_reasoning": "output_reasoning_tokens",
    OUTPUT_AUDIO: "output_audio_tokens",
    "output_audio": "output_audio_tokens",
}
# Anthropic's names for cache tokens, which Langfuse's Anthropic users send beside `input`.
_INPUT_KEYS_WITHOUT_PREFIX = ("cache_read_input_tokens", "cache_creation_input_tokens")
_OPENAI_COMPLETION = ("prompt_tokens", "completion_tokens", "total_tokens")
_OPENAI_RESPONSE = ("input_tokens", "output_tokens", "total_tokens")
_OPENAI_DETAILS = {
    "prompt_tokens_details": "input",
    "completion_tokens_details": "output",
    "input_tokens_details": "input",
    "output_tokens_details": "output",
}


# ---------------------------------------------------------------------------------------------
# Validation in Langfuse's terms: issues shaped like the zod issues its 207 errors carry.


class _Issues:
    """Problems found in one event, each as a zod issue (code, path, message)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(
        self, path: Iterable[str | int], message: str, code: str = "custom", **extra: Any
    ) -> None:
        self.items.append({"code": code, **extra, "path": list(path), "message": message})

    def expected(self, path: Iterable[str | int], expected: str, value: Any) -> None:
        received = _js_type(value)
        self.add(
            path,
            f"Invalid input: expected {expected}, received {received}",
            "invalid_type",
            expected=expected,
        )

    def render(self) -> str:
        return orjson.dumps(self.items, option=orjson.OPT_INDENT_2).decode()


def _js_type(value: Any) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class _Body:
    """Reads the fields of one event body as Langfuse's schemas type them; every mismatch is an
    issue, and the reader returns None for it so that all issues are collected at once."""

    def __init__(
        self, body: Mapping[str, Any], issues: _Issues, path: tuple[str, ...] = ("body",)
    ) -> None:
        self.body = body
        self.issues = issues
        self.path = path

    def _get(self, key: str) -> Any:
        return self.body.get(key)

    def at(self, key: str) -> tuple[str, ...]:
        return (*self.path, key)

    def string(self, key: str, *, max_length: int | None = None) -> str | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.issues.expected(self.at(key), "string", value)
            return None
        if max_length is not None and len(value) > max_length:
            self.issues.add(
                self.at(key),
                f"Too big: expected string to have <={max_length} characters",
                "too_big",
                origin="string",
                maximum=max_length,
            )
            return None
        return value

    def identifier(self, key: str, *, required: bool = False) -> str | None:
        """Langfuse's idSchema: 1 to 800 characters, no carriage return."""
        value = self._get(key)
        if value is None:
            if required:
                self.issues.expected(self.at(key), "string", value)
            return None
        text = self.string(key, max_length=_ID_MAX_LENGTH)
        if text is None:
            return None
        if not text:
            _too_small(self.issues, self.at(key))
            return None
        if "\r" in text:
            self.issues.add(self.at(key), "ID cannot contain carriage return characters")
            return None
        return text

    def time(self, key: str) -> int | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.issues.expected(self.at(key), "string", value)
            return None
        nanos = parse_timestamp(value)
        if nanos is None:
            self.issues.add(
                self.at(key), "Invalid ISO datetime", "invalid_format", format="datetime"
            )
        return nanos

    def choice(self, key: str, options: tuple[str, ...], *, required: bool = False) -> str | None:
        value = self._get(key)
        if value is None and not required:
            return None
        if value not in options:
            listed = "|".join(f'"{o}"' for o in options)
            self.issues.add(
                self.at(key),
                f"Invalid option: expected one of {listed}",
                "invalid_value",
                values=list(options),
            )
            return None
        return str(value)

    def integer(self, key: str) -> int | None:
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.issues.expected(self.at(key), "number", value)
            return None
        if isinstance(value, float) and not value.is_integer():
            self.issues.expected(self.at(key), "int", value)
            return None
        return int(value)

    def number(self, key: str) -> float | None:
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.issues.expected(self.at(key), "number", value)
            return None
        return float(value)

    def boolean(self, key: str) -> bool | None:
        value = self._get(key)
        if value is None or isinstance(value, bool):
            return value
        self.issues.expected(self.at(key), "boolean", value)
        return None

    def mapping(self, key: str) -> Mapping[str, Any] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.issues.expected(self.at(key), "object", value)
            return None
        return value


def parse_timestamp(text: str) -> int | None:
    """Nanoseconds since the epoch of an ISO 8601 datetime with offset, as zod accepts it;
    None when it is not one."""
    match = _DATETIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    except ValueError:
        return None
    if not zulu and (int(off_h) > 23 or int(off_m) > 59):
        return None
    seconds = calendar.timegm(moment.timetuple())
    if not zulu:
        offset = int(off_h) * 3600 + int(off_m) * 60
        seconds -= offset if sign == "+" else -offset
    nanos = int((fraction or "").ljust(9, "0")[:9])
    return seconds * 1_000_000_000 + nanos


# ---------------------------------------------------------------------------------------------
# Identifiers.


def _digest(domain: str, value: str) -> str:
    return hashlib.sha256(f"langfuse-{domain}\x00{value}".encode()).hexdigest()


def trace_id_for(langfuse_id: str) -> str:
    """The W3C trace id of a Langfuse trace id: a UUID's (or 32-hex id's) own digits, else a
    hash."""
    if _HEX_UUID.fullmatch(langfuse_id):
        digits = langfuse_id.replace("-", "").lower()
        if digits.strip("0"):
            return digits
    return _digest("trace", langfuse_id)[:32]


def observation_id_for(langfuse_id: str) -> str:
    """The W3C span id of a Langfuse observation id: a 16-hex id as it is, else a hash."""
    if _SPAN_ID.fullmatch(langfuse_id) and langfuse_id.strip("0"):
        return langfuse_id
    return _digest("observation", langfuse_id)[:16]


def contract_id(domain: str, langfuse_id: str) -> str:
    """An id for the contract's `[A-Za-z0-9_.:-]{1,64}` fields: as it is when it fits."""
    if _CONTRACT_ID.fullmatch(langfuse_id):
        return langfuse_id
    return f"lf-{_digest(domain, langfuse_id)[:40]}"


def _event_id(envelope_id: str, event_type: str, body_id: str | None) -> str:
    key = "\x00".join((envelope_id, event_type, body_id or ""))
    return f"lf-{_digest('event', key)[:40]}"


def _hashed(w3c_id: str, langfuse_id: str) -> bool:
    """Whether the W3C id is a hash, so the Langfuse id must be kept to be found again."""
    return w3c_id != langfuse_id.replace("-", "").lower()


# ---------------------------------------------------------------------------------------------
# Usage and cost.


def _openai_shape(details: Mapping[str, Any]) -> bool:
    """Whether `usageDetails` is an OpenAI usage object (chat completions or responses), which
    Langfuse reads with its own schema rather than as raw keys."""
    keys = set(details)
    if keys & {"prompt_tokens", "completion_tokens", *_OPENAI_DETAILS}:
        return True
    return keys.issuperset(_OPENAI_RESPONSE) and keys <= {*_OPENAI_RESPONSE, *_OPENAI_DETAILS}


def _count(value: Any) -> int | None:
    """A raw usage value as Langfuse keeps it: a non-negative integer, or a string parsed the
    way JavaScript's parseInt does; anything else is dropped."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value >= 0 and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and (match := _LEADING_INT.match(value)):
        number = int(match.group(1))
        return number if number >= 0 else None
    return None


def _exclusive_openai(details: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI usage in Langfuse's exclusive keys: `input` minus its detailed parts, each part as
    `input_<name>` (likewise output), as Langfuse converts it."""
    result: dict[str, int] = {}
    for key, target in (
        ("prompt_tokens", "input"),
        ("input_tokens", "input"),
        ("completion_tokens", "output"),
        ("output_tokens", "output"),
        ("total_tokens", "total"),
    ):
        if (count := _count(details.get(key))) is not None:
            result[target] = count
    for key, side in _OPENAI_DETAILS.items():
        parts = details.get(key)
        if not isinstance(parts, dict):
            continue
        for name, value in parts.items():
            if (count := _count(value)) is not None:
                result[f"{side}_{name}"] = count
                result[side] = max(result.get(side, 0) - count, 0)
    for key, value in details.items():
        known = key in _OPENAI_COMPLETION or key in _OPENAI_RESPONSE or key in _OPENAI_DETAILS
        if not known and (count := _count(value)) is not None:
            result[key] = count
    return result


def _inclusive(
    details: Mapping[str, float],
    names: tuple[str, str, str],
    parts: Mapping[str, str],
    amount: Callable[[float], Any],
) -> dict[str, Any]:
    """Exclusive Langfuse buckets as the contract's inclusive ones, named `names` (input,
    output, total): input is `input` plus every `input_*` key (and Anthropic's cache keys), as
    Langfuse totals it, output likewise, total the reported one else their sum; keys of neither
    side go to `other`."""
    input_name, output_name, total_name = names
    result: dict[str, Any] = {}
    sides: dict[str, float] = {}
    other: dict[str, Any] = {}
    for key, value in details.items():
        if key == "total":
            continue
        side = input_name if key in _INPUT_KEYS_WITHOUT_PREFIX else None
        side = side or {"input": input_name, "output": output_name}.get(key.split("_", 1)[0])
        if side is None:
            other[key] = amount(value)
            continue
        sides[side] = sides.get(side, 0) + value
        if key in parts:
            result[parts[key]] = amount(result.get(parts[key], 0) + value)
    result.update({side: amount(value) for side, value in sides.items()})
    if "total" in details:
        result[total_name] = amount(details["total"])
    elif sides:
        result[total_name] = amount(sum(sides.values()))
    if other:
        result["other"] = other
    return result


_TOKEN_NAMES = ("input_tokens", "output_tokens", "total_tokens")
_COST_NAMES = ("input", "output", "total")
_COST_PARTS = {key: name.removesuffix("_tokens") for key, name in _USAGE_PARTS.items()}


def _usage_and_cost(fields: _Body) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The contract's usage and cost of a generation body (`usage`, `usageDetails`,
    `costDetails`), merged as Langfuse's worker merges them: details override `usage`."""
    details: dict[str, float] = {}
    costs: dict[str, float] = {}
    other_units: dict[str, int] = {}
    if (usage := fields.mapping("usage")) is not None:
        counts = _Body(usage, fields.issues, fields.at("usage"))
        read = {key: counts.integer(key) for key in _COST_NAMES}
        openai = [
            counts.integer(key) for key in ("promptTokens", "completionTokens", "totalTokens")
        ]
        unit = counts.choice("unit", _UNITS)
        # Langfuse reads `usage` in OpenAI's camel-case names as tokens.
        if any(key in usage for key in ("promptTokens", "completionTokens", "totalTokens")):
            read = dict(zip(_COST_NAMES, openai, strict=True))
            unit = "TOKENS"
        present = {key: count for key, count in read.items() if count is not None}
        if unit in (None, "TOKENS"):
            details.update(present)
        else:
            other_units.update({f"{key}_{unit.lower()}": n for key, n in present.items()})
        for key, target in zip(("inputCost", "outputCost", "totalCost"), _COST_NAMES, strict=True):
            if (usd := counts.number(key)) is not None:
                costs[target] = usd
    if (raw_details := fields.body.get("usageDetails")) is not None:
        if not isinstance(raw_details, dict):
            fields.issues.add(fields.at("usageDetails"), "Invalid input", "invalid_union")
        elif _openai_shape(raw_details):
            details.update(_exclusive_openai(raw_details))
        else:
            details.update({k: c for k, v in raw_details.items() if (c := _count(v)) is not None})
    for key, value in (fields.mapping("costDetails") or {}).items():
        # Langfuse keeps only non-negative numbers of costDetails.
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            costs[key] = float(value)
    usage_result = _inclusive(details, _TOKEN_NAMES, _USAGE_PARTS, int) if details else {}
    if other_units:
        usage_result["other"] = {**usage_result.get("other", {}), **other_units}
    cost_result = _inclusive(costs, _COST_NAMES, _COST_PARTS, float) if costs else None
    return usage_result or None, cost_result


# ---------------------------------------------------------------------------------------------
# Translation of one ingestion event.


@dataclass
class Accepted:
    """An ingestion event translated into a contract event."""

    envelope_id: str
    event: dict[str, Any]
    is_update: bool
    observation_id: str | None = None


@dataclass
class Rejected:
    """An ingestion event refused, as one entry of the 207's `errors`."""

    envelope_id: str
    error: str

    def entry(self) -> dict[str, Any]:
        return {"id": self.envelope_id, "status": 400, "message": INVALID, "error": self.error}


Outcome = Accepted | Rejected | None  # None: an sdk-log, reported in neither list


def _environment(value: Any) -> str:
    """Langfuse's public environment name: lower case, no `langfuse` prefix, at most 40 of
    [a-z0-9_-], else 'default'."""
    if not isinstance(value, str):
        return "default"
    name = re.sub(r"^(?:langfuse[-_]?)+", "", value.lower())[:40]
    return name if name and re.fullmatch(r"[a-z0-9_-]+", name) else "default"


def _metadata(value: Any) -> dict[str, Any]:
    """Langfuse metadata as an object: a non-object value is kept under `metadata`, as
    Langfuse keeps it."""
    if value is None:
        return {}
    return dict(value) if isinstance(value, dict) else {"metadata": value}


def _text(value: str | None) -> str | None:
    """An optional text field; Langfuse clients send "" for "not set"."""
    return value or None


def _model_parameters(fields: _Body) -> dict[str, Any] | None:
    """Model parameters; lists and objects (e.g. `stop`) as their JSON text, since the contract
    keeps scalars only."""
    parameters = fields.mapping("modelParameters")
    if parameters is None:
        return None
    result: dict[str, Any] = {}
    for key, value in parameters.items():
        if value is None or isinstance(value, str | int | float | bool):
            result[key] = value
        elif (isinstance(value, list) and all(isinstance(v, str) for v in value)) or (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            result[key] = orjson.dumps(value).decode()
        else:
            fields.issues.add(
                (*fields.at("modelParameters"), key), "Invalid input", "invalid_union"
            )
    return result


def _base(event_id: str, trace_id: str, timestamp_ns: int) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": event_id,
        "trace_id": trace_id,
        "timestamp_unix_nano": timestamp_ns,
    }


def _drop_none(event: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in event.items() if value is not None}


def _too_small(issues: _Issues, path: tuple[str, ...]) -> None:
    issues.add(path, "Too small: expected string to have >=1 characters", "too_small", minimum=1)


def _trace(envelope_id: str, timestamp_ns: int, fields: _Body) -> Outcome:
    body, issues = fields.body, fields.issues
    langfuse_id = fields.identifier("id")
    name = fields.string("name", max_length=_TRACE_NAME_MAX_LENGTH)
    tags = body.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        issues.expected(fields.at("tags"), "array", tags)
    attributes = {
        "name": _text(name),
        "user_id": _text(fields.string("userId")),
        "session_id": _text(fields.string("sessionId")),
        "release": _text(fields.string("release")),
    }
    extras: dict[str, Any] = {
        "langfuse_version": _text(fields.string("version")),
        "langfuse_external_id": _text(fields.string("externalId")),
        "langfuse_public": fields.boolean("public"),
    }
    fields.time("timestamp")
    if issues.items:
        return Rejected(envelope_id, issues.render())
    trace_key = langfuse_id or f"envelope:{envelope_id}"
    trace_id = trace_id_for(trace_key)
    if langfuse_id is not None and _hashed(trace_id, langfuse_id):
        extras["langfuse_trace_id"] = langfuse_id
    environment = body.get("environment")
    event = {
        **_base(_event_id(envelope_id, "trace-create", langfuse_id), trace_id, timestamp_ns),
        "type": "trace",
        **attributes,
        "tags": [t for t in tags if t] if tags else None,
        "metadata": {**_metadata(body.get("metadata")), **_drop_none(extras)} or None,
        "environment": None if environment is None else _environment(environment),
        "input": body.get("input"),
        "output": body.get("output"),
    }
    return Accepted(envelope_id, _drop_none(event), is_update=False)


def _observation(envelope_id: str, timestamp_ns: int, event_type: str, fields: _Body) -> Outcome:
    body, issues = fields.body, fields.issues
    legacy = event_type in _LEGACY
    is_update = event_type in _UPDATES or event_type == "observation-update"
    langfuse_id = fields.identifier("id", required=not legacy)
    if legacy:
        legacy_type = fields.choice("type", _LEGACY_TYPES, required=True)
        kind = legacy_type.lower() if legacy_type else None
    else:
        kind = _CREATES.get(event_type) or _UPDATES.get(event_type)
    langfuse_trace_id = fields.identifier("traceId")
    values: dict[str, Any] = {
        "name": _text(fields.string("name")),
        "start_time_unix_nano": fields.time("startTime"),
        "end_time_unix_nano": fields.time("endTime"),
        "completion_start_time_unix_nano": fields.time("completionStartTime"),
        "level": fields.choice("level", _LEVELS),
        "status_message": _text(fields.string("statusMessage")),
        "model": _text(fields.string("model")),
        "model_parameters": _model_parameters(fields),
    }
    parent = _text(fields.string("parentObservationId"))
    extras: dict[str, Any] = {
        "langfuse_version": _text(fields.string("version")),
        "langfuse_prompt_name": _text(fields.string("promptName")),
        "langfuse_prompt_version": fields.integer("promptVersion"),
    }
    if bool(extras["langfuse_prompt_name"]) != bool(extras["langfuse_prompt_version"]):
        issues.add(fields.path, "Invalid input")
    environment = _environment(body.get("environment"))
    if environment != "default":
        extras["langfuse_environment"] = environment
    values["usage"], values["cost"] = _usage_and_cost(fields)
    if issues.items:
        return Rejected(envelope_id, issues.render())
    if is_update and langfuse_id is None:
        return Rejected(envelope_id, "tracebus needs body.id to know which observation to update")
    if is_update and langfuse_trace_id is None:
        return Rejected(
            envelope_id,
            "tracebus needs body.traceId on updates: the gateway keeps no state to find the "
            "trace of an earlier observation",
        )
    observation_key = langfuse_id or f"envelope:{envelope_id}"
    observation_id = observation_id_for(observation_key)
    if observation_id != observation_key:
        extras["langfuse_observation_id"] = observation_key
    # Langfuse SDKs before 2.0 sent observations without a trace; Langfuse wraps each in a trace
    # of its own, named by the observation.
    trace_key = langfuse_trace_id or observation_key
    trace_id = trace_id_for(trace_key)
    if _hashed(trace_id, trace_key):
        extras["langfuse_trace_id"] = trace_key
    event = {
        **_base(_event_id(envelope_id, event_type, langfuse_id), trace_id, timestamp_ns),
        "type": "observation_update" if is_update else "observation",
        "observation_id": observation_id,
        "parent_observation_id": observation_id_for(parent) if parent else None,
        "kind": kind,
        **values,
        "input": body.get("input"),
        "output": body.get("output"),
        "metadata": {**_metadata(body.get("metadata")), **_drop_none(extras)} or None,
    }
    if not is_update:
        # The contract's snapshot needs a name and a start; Langfuse leaves the name empty and
        # starts the observation at the event's time. An event is an instant.
        event["name"] = event["name"] or kind
        event["start_time_unix_nano"] = event["start_time_unix_nano"] or timestamp_ns
        if kind == "event":
            event["end_time_unix_nano"] = event["start_time_unix_nano"]
    return Accepted(envelope_id, _drop_none(event), is_update, observation_id)


def _score(envelope_id: str, timestamp_ns: int, fields: _Body) -> Outcome:
    body, issues = fields.body, fields.issues
    langfuse_id = fields.identifier("id")
    name = fields.string("name")
    if body.get("name") is None:
        issues.expected(fields.at("name"), "string", None)
    elif name == "":
        _too_small(issues, fields.at("name"))
    trace_key = _text(fields.string("traceId"))
    session_id = _text(fields.string("sessionId"))
    dataset_run_id = _text(fields.string("datasetRunId"))
    observation_key = _text(fields.string("observationId"))
    comment = fields.string("comment")
    source = fields.choice("source", _SCORE_SOURCES) or "API"
    data_type = fields.choice("dataType", _SCORE_TYPES)
    config_id = _text(fields.string("configId"))
    extras: dict[str, Any] = {
        "langfuse_config_id": config_id,
        "langfuse_queue_id": _text(fields.string("queueId")),
        "langfuse_execution_trace_id": _text(fields.string("executionTraceId")),
    }
    value = body.get("value")
    if value_problem := _score_value_problem(data_type, value):
        issues.add(fields.at("value"), value_problem)
    if sum(t is not None for t in (trace_key, session_id, dataset_run_id)) != 1 or (
        observation_key and not trace_key
    ):
        issues.add(
            (*fields.path, "traceId", "sessionId", "datasetRunId", "observationId"),
            "Provide exactly one of the following: traceId (with optional observationId), "
            "sessionId or datasetRunId. ObservationId requires traceId.",
        )
    if issues.items:
        return Rejected(envelope_id, issues.render())
    if source == "ANNOTATION" and not config_id and data_type != "CORRECTION":
        # Langfuse's worker drops these after answering 201; the sender should know.
        return Rejected(
            envelope_id,
            "configId is required when source is ANNOTATION (except for CORRECTION scores).",
        )
    if trace_key is None:
        return Rejected(
            envelope_id,
            "tracebus keeps scores of traces and observations; scores of a session or a "
            "dataset run are not supported",
        )
    trace_id = trace_id_for(trace_key)
    if _hashed(trace_id, trace_key):
        extras["langfuse_trace_id"] = trace_key
    observation_id = observation_id_for(observation_key) if observation_key else None
    if observation_key and observation_id != observation_key:
        extras["langfuse_observation_id"] = observation_key
    environment = _environment(body.get("environment"))
    if environment != "default":
        extras["langfuse_environment"] = environment
    contract_type, contract_value = _score_value(data_type, value)
    if data_type is not None and data_type != contract_type:
        extras["langfuse_data_type"] = data_type
    event = {
        **_base(_event_id(envelope_id, "score-create", langfuse_id), trace_id, timestamp_ns),
        "type": "score",
        "score_id": contract_id("score", langfuse_id or f"envelope:{envelope_id}"),
        "observation_id": observation_id,
        "name": name,
        "value": contract_value,
        "data_type": contract_type,
        "comment": comment,
        "source": source,
        "metadata": {**_metadata(body.get("metadata")), **_drop_none(extras)} or None,
    }
    return Accepted(envelope_id, _drop_none(event), is_update=False)


def _score_value_problem(data_type: str | None, value: Any) -> str | None:
    """Why Langfuse refuses `value` for `data_type` (None: inferred from the value)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if data_type in ("NUMERIC", "BOOLEAN") and not is_number:
        return f"Invalid input: expected number, received {_js_type(value)}"
    if data_type == "BOOLEAN" and value not in (0, 1):
        return "Value must be a number equal to either 0 or 1 for data type BOOLEAN"
    if data_type in ("CATEGORICAL", "CORRECTION", "TEXT") and not isinstance(value, str):
        return f"Invalid input: expected string, received {_js_type(value)}"
    if data_type == "TEXT" and not 1 <= len(value) <= _TEXT_SCORE_MAX_LENGTH:
        return f"Too big: expected string to have <={_TEXT_SCORE_MAX_LENGTH} characters"
    if data_type is None and not (is_number or isinstance(value, str)):
        return f"Invalid input: expected string | number, received {_js_type(value)}"
    return None


def _score_value(data_type: str | None, value: Any) -> tuple[str, bool | float | str]:
    """The contract's data type and value. Langfuse infers NUMERIC for a number and CATEGORICAL
    for a string; its TEXT and CORRECTION scores are text, CATEGORICAL in the contract."""
    if data_type == "BOOLEAN":
        return "BOOLEAN", value == 1
    if isinstance(value, str):
        return "CATEGORICAL", value
    return "NUMERIC", float(value)


def _envelope(raw: Any) -> tuple[str, str, int, _Body] | Rejected:
    """The envelope's id, type, timestamp and body reader, or why Langfuse refuses it."""
    issues = _Issues()
    if not isinstance(raw, dict):
        issues.expected((), "object", raw)
        return Rejected("unknown", issues.render())
    reported_id = raw["id"] if isinstance(raw.get("id"), str) else "unknown"
    event_type = raw.get("type")
    if event_type not in _EVENT_TYPES:
        issues.add(
            ("type",),
            "Invalid input",
            "invalid_union",
            errors=[],
            note="No matching discriminator",
            discriminator="type",
        )
        return Rejected(reported_id, issues.render())
    envelope = _Body(raw, issues, ())
    envelope_id = envelope.identifier("id", required=True)
    timestamp_ns = envelope.time("timestamp")
    if raw.get("timestamp") is None:
        issues.expected(("timestamp",), "string", None)
    body = raw.get("body")
    if not isinstance(body, dict):
        issues.expected(("body",), "object", body)
    if event_type == "dataset-run-item-create":
        issues.add((), "Dataset run item creation is only allowed for internal usage")
    if envelope_id is None or timestamp_ns is None or not isinstance(body, dict) or issues.items:
        return Rejected(reported_id, issues.render())
    return envelope_id, event_type, timestamp_ns, _Body(body, _Issues())


def translate(raw: Any) -> Outcome:
    """One ingestion event as a contract event, or why Langfuse (or tracebus) refuses it."""
    envelope = _envelope(raw)
    if isinstance(envelope, Rejected):
        return envelope
    envelope_id, event_type, timestamp_ns, fields = envelope
    if event_type == "trace-create":
        return _trace(envelope_id, timestamp_ns, fields)
    if event_type == "score-create":
        return _score(envelope_id, timestamp_ns, fields)
    if event_type == "sdk-log":
        if fields.body.get("log") is None:
            fields.issues.add(fields.at("log"), "Invalid input", "invalid_union")
            return Rejected(envelope_id, fields.issues.render())
        return None
    return _observation(envelope_id, timestamp_ns, event_type, fields)


def _langfuse_order(accepted: list[Accepted]) -> list[Accepted]:
    """Langfuse's processing order: creates by timestamp, then updates by timestamp. An update
    is dated no earlier than a create of the same observation in the batch, since the stream
    merges by timestamp and Langfuse applies the update last."""
    ordered = sorted(accepted, key=lambda a: (a.is_update, a.event["timestamp_unix_nano"]))
    created: dict[str, int] = {}
    for item in ordered:
        if item.observation_id is None:
            continue
        latest = max(item.event["timestamp_unix_nano"], created.get(item.observation_id, 0))
        if item.is_update:
            item.event["timestamp_unix_nano"] = latest
        else:
            created[item.observation_id] = latest
    return ordered


# ---------------------------------------------------------------------------------------------
# Routes.


def _bad_envelope(*problems: str) -> web.Response:
    return web.json_response({"message": INVALID, "errors": list(problems)}, status=400)


async def _ingest(call: Call) -> web.Response:
    try:
        envelope = orjson.loads(call.body)
    except orjson.JSONDecodeError as error:
        return _bad_envelope(f"body is not JSON: {error}")
    batch = envelope.get("batch") if isinstance(envelope, dict) else None
    if not isinstance(batch, list):
        return _bad_envelope(f"Invalid input: expected array, received {_js_type(batch)}")
    accepted: list[Accepted] = []
    errors: list[dict[str, Any]] = []
    for raw in batch:
        outcome = translate(raw)
        if isinstance(outcome, Accepted):
            if problem := call.publisher.problem(outcome.event):
                outcome = Rejected(outcome.envelope_id, f"not a valid tracebus event: {problem}")
            else:
                accepted.append(outcome)
        if isinstance(outcome, Rejected):
            errors.append(outcome.entry())
    ordered = _langfuse_order(accepted)
    await call.publisher.publish([a.event for a in ordered], call.caller)
    successes = [{"id": a.envelope_id, "status": 201} for a in ordered]
    return web.json_response({"successes": successes, "errors": errors}, status=207)


async def _health(call: Call) -> web.Response:
    return web.json_response({"status": "OK", "version": _VERSION})


async def _projects(call: Call) -> web.Response:
    """What the Langfuse SDKs' `auth_check()` reads: the key's project."""
    project = call.caller.project
    return web.json_response(
        {
            "data": [
                {
                    "id": project,
                    "name": project,
                    "organization": {"id": "tracebus", "name": "tracebus"},
                    "metadata": {},
                }
            ]
        }
    )


# Langfuse names its errors on the ingestion endpoint; elsewhere it answers with a message only.
_ERROR_NAMES = {
    400: "InvalidRequestError",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "LangfuseNotFoundError",
    405: "MethodNotAllowedError",
    503: "ServiceUnavailableError",
}


def _render_error(request: web.Request, error: GatewayError) -> web.Response:
    body: dict[str, Any] = {"message": error.message}
    if error.status == 429:
        body["code"] = "rate_limited"
    elif request.path == INGESTION_PATH and error.status in _ERROR_NAMES:
        body = {"error": _ERROR_NAMES[error.status], **body}
    return web.json_response(body, status=error.status)


ADAPTER = Adapter(
    name="langfuse",
    routes=(
        Route("POST", INGESTION_PATH, _ingest),
        Route("GET", HEALTH_PATH, _health, authenticated=False),
        Route("GET", PROJECTS_PATH, _projects),
    ),
    render_error=_render_error,
)
