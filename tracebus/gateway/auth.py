"""API keys per project, and who a request comes from.

Clients authenticate the way their own SDK does: Langfuse with HTTP Basic (public key, secret
key), LangSmith with `x-api-key`, OpenTelemetry exporters with a bearer token, Basic or
`x-api-key` header. A configured key is either one secret (matched against the Basic password,
the bearer token or `x-api-key`) or a `public:secret` pair (matched against Basic credentials).
Keys are kept only as SHA-256 digests; logs and metrics name a key by a digest prefix."""

from __future__ import annotations

import base64
import binascii
import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from tracebus.gateway.protocol import Caller, GatewayError
from tracebus.schemas import MAX_PROJECT_CHARS

ANONYMOUS = Caller(project="default", key_name="anonymous")


class KeyFileError(ValueError):
    """The API key configuration cannot be used; the message says why, never the keys."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyRing:
    def __init__(self, keys: Iterable[tuple[str, str]], allow_anonymous: bool = False) -> None:
        """`keys` are (project, key) pairs."""
        self._callers: dict[str, Caller] = {}
        for project, key in keys:
            digest = _digest(key)
            self._callers[digest] = Caller(project=project, key_name=f"key-{digest[:8]}")
        self.allow_anonymous = allow_anonymous

    def __len__(self) -> int:
        return len(self._callers)

    def caller(self, headers: Mapping[str, str]) -> Caller:
        """Who sent a request with these headers; GatewayError 401 when no key matches."""
        presented = list(_credentials(headers))
        for credential in presented:
            caller = self._callers.get(_digest(credential))
            if caller is not None:
                return caller
        if self.allow_anonymous:
            return ANONYMOUS
        if not presented:
            raise GatewayError(
                401,
                "no API key: send it as HTTP Basic credentials, a bearer token or x-api-key",
            )
        raise GatewayError(401, "invalid API key")


def _credentials(headers: Mapping[str, str]) -> Iterable[str]:
    authorization = headers.get("Authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise GatewayError(401, "malformed HTTP Basic credentials") from None
        user, _, password = decoded.partition(":")
        yield f"{user}:{password}"
        yield password
    elif scheme.lower() == "bearer" and value.strip():
        yield value.strip()
    if api_key := headers.get("x-api-key", "").strip():
        yield api_key


def parse_key_pairs(text: str) -> list[tuple[str, str]]:
    """`project=key,project=key` → pairs; raises KeyFileError naming the bad entry's position."""
    pairs = []
    for position, entry in enumerate(filter(None, (e.strip() for e in text.split(","))), 1):
        project, separator, key = entry.partition("=")
        if not separator or not project.strip() or not key.strip():
            raise KeyFileError(f"API key entry {position} is not project=key")
        pairs.append((_project(project.strip(), f"API key entry {position}"), key.strip()))
    return pairs


def load_key_file(path: Path) -> list[tuple[str, str]]:
    """Pairs from a TOML file of `[projects.<name>]` tables with `keys = ["…"]`."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise KeyFileError(f"cannot read API key file {path}: {error}") from None
    projects = document.get("projects")
    if not isinstance(projects, dict) or not projects:
        raise KeyFileError(f"{path}: expected [projects.<name>] tables with keys = [...]")
    pairs = []
    for project, table in projects.items():
        keys = table.get("keys") if isinstance(table, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise KeyFileError(f"{path}: projects.{project}.keys must be a list of strings")
        pairs.extend((_project(project, f"{path}: projects.{project[:40]}"), key) for key in keys)
    return pairs


def _project(name: str, where: str) -> str:
    """A project name as records carry it (`PROJECT_HEADER`)."""
    if len(name) > MAX_PROJECT_CHARS:
        raise KeyFileError(f"{where}: a project name has at most {MAX_PROJECT_CHARS} characters")
    return name
