"""Parse and format the durations and byte sizes that the doctor's commands read and print."""

from __future__ import annotations

from pgmux.config.values import TIME_EXAMPLES, parse_time


def parse_duration(text: str) -> float:
    """Seconds in `30s`, `30m` or `30min`, `2h`, `1d`, `1h30m` or a bare number of seconds: the
    spellings the config files take too (config.values.parse_time).

    Raises ValueError with a message fit for a command line.
    """
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (use {TIME_EXAMPLES})") from None


def format_duration(seconds: float | None) -> str:
    """A short human duration: `850ms`, `42s`, `5m03s`, `5m`, `2h10m`, `3d04h`; `-` when
    unknown."""
    if seconds is None:
        return "-"
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    # NOTE: a round value (a threshold, mostly) reads as it was typed: 5m, not 5m00s.
    if whole < 3600:
        return f"{whole // 60}m" + (f"{whole % 60:02d}s" if whole % 60 else "")
    if whole < 86400:
        return f"{whole // 3600}h" + (f"{whole % 3600 // 60:02d}m" if whole % 3600 // 60 else "")
    return f"{whole // 86400}d" + (f"{whole % 86400 // 3600:02d}h" if whole % 86400 // 3600 else "")


def format_bytes(size: int | None) -> str:
    """Bytes as `7.5 MB` (powers of 1024, PostgreSQL's pg_size_pretty names); `-` when unknown."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
