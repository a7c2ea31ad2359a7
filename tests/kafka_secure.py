"""A strict front for a broker without TLS or SASL, as managed Kafka serves them: it takes TLS
connections only, and lets a connection's requests through only once it has authenticated
with SASL PLAIN or SCRAM-SHA-256/512 (RFC 5802/7677), as Kafka does: before that, only ApiVersions,
SaslHandshake and SaslAuthenticate; anything else, or a wrong password, closes it.

The broker behind must advertise the front's address (`EmbeddedBroker(advertised=...)`), so
that every client, whichever broker address it is given next, connects through here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct
import threading
from collections import Counter
from typing import Any, Self

from aiokafka.protocol import admin
from kafka_proxy import _frames

_API_VERSIONS, _SASL_HANDSHAKE, _SASL_AUTHENTICATE = 18, 17, 36
_REQUEST_HEADER = struct.Struct(">hhih")  # api key, version, correlation id, client id length
_SIZE = struct.Struct(">i")
_ILLEGAL_SASL_STATE, _UNSUPPORTED_MECHANISM, _AUTHENTICATION_FAILED = 34, 33, 58
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_ITERATIONS = 4096


class SecureFront:
    """Serves `address` (127.0.0.1:port) with TLS (`context`), forwarding authenticated
    connections to `upstream`; `users` maps user names to passwords."""

    def __init__(
        self, upstream: str, context: ssl.SSLContext, users: dict[str, str], address: str
    ) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self._context = context
        self._users = users
        self.port = int(address.rpartition(":")[2])
        self.authenticated: Counter[str] = Counter()  # by mechanism
        self.refused = 0  # connections closed for a failed or missing authentication
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, ssl=self._context
        )

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        try:
            if await self._authenticate(reader, writer, up_reader, up_writer):
                await asyncio.gather(
                    _frames(reader, up_writer, lambda frame: frame),
                    _frames(up_reader, writer, lambda frame: frame),
                )
            else:
                self.refused += 1
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            up_writer.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer the connection's requests until it has authenticated (True) or must be
        closed (False)."""
        mechanism: str | None = None
        scram: _Scram | None = None
        while True:
            frame = await _read_frame(reader)
            api_key, version, correlation, length = _REQUEST_HEADER.unpack_from(frame)
            body = frame[_REQUEST_HEADER.size + max(length, 0) :]
            if api_key == _API_VERSIONS:
                up_writer.writelines([_SIZE.pack(len(frame)), frame])
                await up_writer.drain()
                await _write_frame(writer, await _read_frame(up_reader))
            elif api_key == _SASL_HANDSHAKE and version == 1:
                wanted = admin.SaslHandShakeRequest_v1.decode(body).mechanism
                known = wanted in MECHANISMS
                mechanism = wanted if known else None
                answer = admin.SaslHandShakeResponse_v1(
                    0 if known else _UNSUPPORTED_MECHANISM, list(MECHANISMS)
                )
                await _answer(writer, correlation, answer)
                if not known:
                    return False
            elif api_key == _SASL_AUTHENTICATE and version in (0, 1) and mechanism is not None:
                token = getattr(admin, f"SaslAuthenticateRequest_v{version}").decode(body)
                if mechanism == "PLAIN":
                    outcome: bytes | bool = self._plain(token.sasl_auth_bytes)
                else:
                    scram = scram or _Scram(self._users, mechanism.removeprefix("SCRAM-"))
                    outcome = scram.step(token.sasl_auth_bytes)
                response = getattr(admin, f"SaslAuthenticateResponse_v{version}")
                extra = [0] if version == 1 else []
                if outcome is False:
                    failed = response(_AUTHENTICATION_FAILED, "authentication failed", b"", *extra)
                    await _answer(writer, correlation, failed)
                    return False
                challenge = b"" if outcome is True else outcome
                await _answer(writer, correlation, response(0, None, challenge, *extra))
                if outcome is True or (scram is not None and scram.done):
                    self.authenticated[mechanism] += 1
                    return True
            else:
                return False  # Kafka closes a connection that skips authentication

    def _plain(self, token: bytes) -> bool:
        _, user, password = token.decode().split("\0")
        return user in self._users and hmac.compare_digest(self._users[user], password)


class _Scram:
    """The server side of SCRAM with `hash` ("SHA-256", "SHA-512"): a first message answered
    with a challenge, a final one with the server's signature once the client's proof holds."""

    def __init__(self, users: dict[str, str], hash: str) -> None:
        self._users = users
        self._hash = hash.replace("-", "").lower()
        self._salt = os.urandom(16)
        self.done = False
        self._first_bare = self._server_first = ""
        self._salted = b""

    def step(self, message: bytes) -> bytes | bool:
        text = message.decode()
        if not self._first_bare:
            self._first_bare = text.split(",", 2)[2]  # without the GS2 header
            fields = dict(part.split("=", 1) for part in self._first_bare.split(","))
            password = self._users.get(fields["n"])
            if password is None:
                return False
            self._salted = hashlib.pbkdf2_hmac(
                self._hash, password.encode(), self._salt, _ITERATIONS
            )
            nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
            salt = base64.b64encode(self._salt).decode()
            self._server_first = f"r={nonce},s={salt},i={_ITERATIONS}"
            return self._server_first.encode()
        without_proof, _, proof = text.rpartition(",p=")
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        client_key = self._hmac(self._salted, b"Client Key")
        signature = self._hmac(hashlib.new(self._hash, client_key).digest(), auth_message)
        recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
        if not hmac.compare_digest(recovered, client_key):
            return False
        self.done = True
        server_signature = self._hmac(self._hmac(self._salted, b"Server Key"), auth_message)
        return b"v=" + base64.b64encode(server_signature)

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self._hash).digest()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = _SIZE.unpack(await reader.readexactly(_SIZE.size))
    return await reader.readexactly(size)


async def _write_frame(writer: asyncio.StreamWriter, frame: bytes) -> None:
    writer.writelines([_SIZE.pack(len(frame)), frame])
    await writer.drain()


async def _answer(writer: asyncio.StreamWriter, correlation: int, response: Any) -> None:
    await _write_frame(writer, struct.pack(">i", correlation) + response.encode())
