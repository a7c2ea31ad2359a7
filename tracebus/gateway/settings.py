"""Gateway configuration: arguments first, then `TRACEBUS_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from tracebus.config import KafkaSettings
from tracebus.schemas import DEFAULT_MAX_RECORD_BYTES


class GatewaySettings(KafkaSettings):
    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(4318, ge=0, le=65535, description="HTTP port (4318 is OTLP/HTTP's).")
    api_keys: SecretStr | None = Field(
        None,
        description="API keys as project=key pairs, comma separated (TRACEBUS_API_KEYS).",
    )
    api_keys_file: Path | None = Field(
        None, description="TOML file: [projects.<name>] keys = [...]; read with api_keys."
    )
    allow_anonymous: bool = Field(
        False, description="Accept requests without a known key, as project 'default'."
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body as sent (compressed)."
    )
    max_decoded_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request body once decompressed."
    )
    rate_limit_per_s: float = Field(
        200.0, ge=0, description="Requests per second per API key; 0 for no limit."
    )
    rate_limit_burst: int = Field(400, ge=1, description="Requests a key may send at once.")
    ack_timeout_s: float = Field(
        10.0, gt=0, description="How long a request waits for Kafka before answering 503."
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent with 503.")
    max_record_bytes: int = Field(
        DEFAULT_MAX_RECORD_BYTES, ge=1024, description="Largest Kafka record the gateway writes."
    )
