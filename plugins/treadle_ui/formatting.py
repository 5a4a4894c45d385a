"""How values read on a page: numbers, sizes, durations, times, and a status's colour.

A status is shown as the store reports it. Its colour comes from a word list, and a word not
on it gets the neutral colour, so a status a later treadle adds needs no change here.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ago",
    "format_bytes",
    "format_duration",
    "format_number",
    "format_time",
    "status_tone",
]

_TONES = {
    "good": ("completed", "active", "ok", "healthy", "retrained"),
    "live": ("running", "pending", "claimed"),
    "bad": ("failed", "died", "timed_out", "lease_expired", "critical", "error"),
    "warn": ("warning", "cancelling", "handed_back", "experimental", "interrupted"),
    "muted": ("cancelled", "retired", "paused", "not retrained", "superseded"),
}
_TONE_OF = {word: tone for tone, words in _TONES.items() for word in words}


def status_tone(status: object) -> str:
    """``good``, ``live``, ``bad``, ``warn``, ``muted``, or ``neutral`` for any other word."""
    return _TONE_OF.get(str(status).lower(), "neutral")


def format_epoch(value: object) -> str:
    """A stored epoch (counted from 0, as the API and the stores count) as people read it,
    counted from 1 as the CLI, the logs and the docs show it; ``-`` for none."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value + 1:,}"
    return "-"


def format_number(value: object, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; ``-`` for None, ``NaN``/``inf`` spelled."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-4):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def format_bytes(size: object) -> str:
    """``12.3 MiB``; ``-`` for None."""
    if not isinstance(size, int | float) or isinstance(size, bool):
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def format_duration(seconds: object) -> str:
    """``850 ms``, ``42.0 s``, ``3 min 05 s``, ``2 h 04 min``, ``3 d 02 h``."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or math.isnan(seconds):
        return "-"
    value = float(seconds)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def _moment(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def format_time(value: object) -> str:
    """``2026-11-01 04:23:42 UTC``; the text itself when it is not a time; ``-`` for None."""
    moment = _moment(value)
    if moment is None:
        return "-" if value in (None, "") else str(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(value: object) -> str:
    """The machine-readable form for ``<time datetime=...>``."""
    moment = _moment(value)
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def ago(value: object, now: datetime | None = None) -> str:
    """``3 min ago`` or ``in 2 h 00 min``, relative to ``now``."""
    moment = _moment(value)
    if moment is None:
        return ""
    delta = ((now or datetime.now(UTC)) - moment).total_seconds()
    if abs(delta) < 1:
        return "just now"
    text = format_duration(abs(delta))
    return f"{text} ago" if delta > 0 else f"in {text}"


def pretty_json(value: Any) -> str:
    """Indented JSON, non-ASCII kept."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def first_line(text: object, limit: int = 160) -> str:
    """The last non-empty line of an error text (a traceback's message), cut at ``limit``."""
    if not text:
        return ""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
