"""How every Kafka client tracebus makes connects: the servers, encryption and authentication.

Managed Kafka (Confluent Cloud, Amazon MSK, Aiven, Redpanda Cloud) takes only TLS, and
usually SASL on top. One process talks to one cluster, so the security settings are the
process's own, from TRACEBUS_KAFKA_* variables (an app may give its SDK client others), and
`kafka_options` hands them to each client with its servers: the workers', the producer SDK's,
and the operating commands'.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, Literal, Self

from aiokafka.helpers import create_ssl_context
from pydantic import FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import faust

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecurity(BaseSettings):
    """Encryption and authentication of the connections to Kafka (TRACEBUS_KAFKA_*)."""

    # An error must not show the input: it holds the password, and an app may log the error.
    model_config = SettingsConfigDict(
        env_prefix="TRACEBUS_KAFKA_", extra="ignore", hide_input_in_errors=True
    )

    security_protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: Mechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # The CA that signed the brokers' certificates; the system's CAs when unset.
    ssl_cafile: FilePath | None = None
    # A client certificate and its key, for brokers that authenticate clients by TLS (mTLS).
    ssl_certfile: FilePath | None = None
    ssl_keyfile: FilePath | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs TRACEBUS_KAFKA_SASL_USERNAME "
                "and TRACEBUS_KAFKA_SASL_PASSWORD"
            )
        if not sasl and (self.sasl_username or self.sasl_password):
            raise ValueError(
                "a SASL username or password is set, but security_protocol "
                f"{self.security_protocol} does not authenticate with SASL (SASL_SSL does)"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("a client certificate needs its key: set ssl_certfile and ssl_keyfile")
        tls_files = self.ssl_cafile or self.ssl_certfile
        if tls_files and not self.security_protocol.endswith("SSL"):
            raise ValueError(
                f"TLS files are set, but security_protocol {self.security_protocol} has no TLS"
            )
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.security_protocol.endswith("SSL"):
            return None
        return create_ssl_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
            certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
            keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
        )

    def client_options(self) -> dict[str, Any]:
        """The settings as aiokafka clients take them."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.security_protocol.startswith("SASL_"):
            assert self.sasl_password is not None
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value(),
            }
        return options

    def faust_credentials(self) -> faust.SASLCredentials | faust.SSLCredentials | None:
        """The settings as Faust's `broker_credentials`."""
        import faust  # only the stream worker needs it: not at every import of tracebus.kafka

        context = self.ssl_context()
        if self.security_protocol.startswith("SASL_"):
            assert self.sasl_password is not None
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                ssl_context=context,
                mechanism=self.sasl_mechanism,
            )
        return None if context is None else faust.SSLCredentials(context)


def kafka_options(bootstrap_servers: str, security: KafkaSecurity | None = None) -> dict[str, Any]:
    """What a Kafka client is made with: `bootstrap_servers`, and `security`, by default the
    process's (a pydantic ValidationError says what is wrong with them)."""
    return {
        "bootstrap_servers": bootstrap_servers,
        **(security or KafkaSecurity()).client_options(),
    }
