"""The dashboard's throughput sparkline: callbacks per minute over the last hour."""

from __future__ import annotations

from dataclasses import dataclass

from flowtracker.engine.timestamps import format_ns

MINUTES = 60
WIDTH, HEIGHT = 600, 64
_MINUTE_NS = 60 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class Tick:
    """A mark of the time axis: where (in the SVG's units, and as a percentage of its
    width) and its label (HH:MM, UTC)."""

    x: float
    percent: float
    label: str


TICK_MINUTES = 15  # a mark of the time axis every quarter of an hour


@dataclass(frozen=True, slots=True)
class Sparkline:
    minutes: tuple[tuple[str, int], ...]  # (YYYY-MM-DDTHH:MM, callbacks), oldest first
    line: str  # SVG polyline points
    area: str  # the same, closed along the bottom
    total: int
    peak: int
    ticks: tuple[Tick, ...] = ()
    width: int = WIDTH
    height: int = HEIGHT


def first_minute(now_ns: int) -> str:
    """The oldest minute the sparkline shows, for `Store.received_since`."""
    return _minute(now_ns - (MINUTES - 1) * _MINUTE_NS)


def sparkline(received: dict[str, int], now_ns: int) -> Sparkline:
    """One point per minute of the last hour, quiet minutes at zero, scaled to the peak."""
    minutes = tuple(
        (minute, received.get(minute, 0))
        for minute in (_minute(now_ns - back * _MINUTE_NS) for back in range(MINUTES - 1, -1, -1))
    )
    peak = max(count for _, count in minutes)
    step = WIDTH / (MINUTES - 1)
    points = [
        f"{index * step:.1f},{HEIGHT - 2 - (HEIGHT - 4) * count / (peak or 1):.1f}"
        for index, (_, count) in enumerate(minutes)
    ]
    line = " ".join(points)
    area = f"0,{HEIGHT} {line} {WIDTH},{HEIGHT}"
    ticks = tuple(
        Tick(round(index * step, 1), round(100 * index / (MINUTES - 1), 2), minute[11:])
        for index, (minute, _) in enumerate(minutes)
        if int(minute[14:16]) % TICK_MINUTES == 0
    )
    return Sparkline(minutes, line, area, sum(count for _, count in minutes), peak, ticks)


def _minute(ns: int) -> str:
    return format_ns(ns)[:16]
