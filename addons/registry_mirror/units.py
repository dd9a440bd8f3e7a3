"""Durations and sizes as operators write them: `7d`, `12h`, `15m`, `30s` or seconds; `500GiB`, `2TB` or bytes."""
from __future__ import annotations

import re

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]?i?B?)", re.IGNORECASE)
_BYTES = {"": 1, "b": 1, **{f"{p}b": 1000 ** (i + 1) for i, p in enumerate("kmgtp")},
          **{f"{p}ib": 1024 ** (i + 1) for i, p in enumerate("kmgtp")}}


def parse_duration(key: str, value: object) -> float:
    """Seconds from a number or `<number><s|m|h|d>`; a ValueError naming `key` and the accepted forms."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{key}: {value!r} is not a duration; write seconds (604800) or 30s, 15m, 12h, 7d")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def parse_size(key: str, value: object) -> int:
    """Bytes from a number or `<number><KB|MB|GB|TB|KiB|MiB|GiB|TiB>`; a ValueError naming `key`."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else ""
    if match is None or (unit and not unit.endswith("b")) or unit not in _BYTES:
        raise ValueError(f"{key}: {value!r} is not a size; write bytes (536870912000) or 500GiB, 2TB, 800MiB")
    return int(float(match.group(1)) * _BYTES[unit])


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)
