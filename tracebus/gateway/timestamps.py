"""Times as the contract carries them: whole nanoseconds since the Unix epoch, computed without
floating point so that no digit a client sent is lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def unix_nano(moment: datetime) -> int:
    """Nanoseconds since the epoch of a timezone-aware `moment` (to its microsecond)."""
    return (moment - EPOCH) // _MICROSECOND * 1000


def fraction_nanos(digits: str | None) -> int:
    """Nanoseconds of the decimal fraction of a second written as `digits` ("25" is 0.25 s);
    digits past the ninth are dropped."""
    return int((digits or "").ljust(9, "0")[:9])


def now_unix_nano() -> int:
    return unix_nano(datetime.now(UTC))
