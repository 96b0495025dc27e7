"""Times as askfirst stores them: integer microseconds since 1970-01-01 UTC.

Integers compare and hash the same way on SQLite, PostgreSQL, DuckDB and Arrow, so a
decision at a time is exact on every engine. Callers see timezone-aware datetimes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROS = 1_000_000
DAY_US = 86_400 * MICROS  # a day in microseconds


def now() -> datetime:
    return datetime.now(UTC)


def parse(value: str | datetime, *, field: str = "time") -> datetime:
    """Parse an ISO 8601 time; a time without a zone is refused (it would be a guess)."""
    if isinstance(value, datetime):
        dt = value
    else:
        text = value.strip()
        try:
            if len(text) == 10:  # a bare date means its start, in UTC
                dt = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
            else:
                dt = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise ValueError(
                f"{field}: {value!r} is not an ISO 8601 time, e.g. 2026-03-01T12:00:00Z"
            ) from None
    if dt.tzinfo is None:
        raise ValueError(f"{field}: {value!r} has no time zone; add 'Z' for UTC")
    try:
        return EPOCH + timedelta(microseconds=to_micros(dt))
    except (OverflowError, ValueError):
        raise ValueError(f"{field}: {value!r} is out of range") from None


def to_micros(dt: datetime) -> int:
    delta = dt.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROS + delta.microseconds


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def iso(dt_or_us: datetime | int) -> str:
    """RFC 3339 in UTC with a 'Z', to the microsecond when there are any."""
    dt = from_micros(dt_or_us) if isinstance(dt_or_us, int) else dt_or_us.astimezone(UTC)
    text = dt.isoformat(timespec="microseconds" if dt.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def eighteenth_birthday(birth: date) -> date:
    """The day a person born on ``birth`` turns 18 (29 February -> 1 March)."""
    try:
        return birth.replace(year=birth.year + 18)
    except ValueError:
        return date(birth.year + 18, 3, 1)
