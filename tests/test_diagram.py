"""The lifecycle diagrams and the throughput line, drawn from the engine's own data."""

from __future__ import annotations

import pytest

from flowtracker.engine.events import Callback
from flowtracker.engine.lifecycles import DOCUMENT, FLOW, Lifecycle
from flowtracker.engine.parsing import parse_flow
from flowtracker.engine.timestamps import format_ns
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.reads.diagram import BOX_HEIGHT, BOX_WIDTH, Diagram, layout
from flowtracker.store.sqlite.backend import SQLiteStore
from flowtracker.web.charts import MINUTES, first_minute, sparkline
from tests.conftest import Clock, flow

LIFECYCLES = pytest.mark.parametrize("lifecycle", [FLOW, DOCUMENT], ids=["flow", "document"])
NOON = 1_764_331_200 * 10**9  # 2025-11-28T12:00:00Z


@LIFECYCLES
def test_every_arrow_is_a_move_the_machine_makes(lifecycle: Lifecycle) -> None:
    for source, trigger, dest in lifecycle.arrows:
        step = lifecycle.step(source, trigger)
        assert (step.refusal, step.state) == (None, dest), (source, trigger)


@LIFECYCLES
def test_every_state_is_drawn_once_and_no_boxes_overlap(lifecycle: Lifecycle) -> None:
    drawing = layout(lifecycle)
    assert sorted(box.state for box in drawing.boxes) == sorted(lifecycle.states)
    for number, one in enumerate(drawing.boxes):
        for other in drawing.boxes[number + 1 :]:
            apart = (abs(one.x - other.x) >= BOX_WIDTH, abs(one.y - other.y) >= BOX_HEIGHT)
            assert any(apart), (one, other)
        assert 0 <= one.x <= drawing.width - BOX_WIDTH
        assert 0 <= one.y <= drawing.height - BOX_HEIGHT


@LIFECYCLES
def test_initial_and_terminal_states_are_marked(lifecycle: Lifecycle) -> None:
    drawing = layout(lifecycle)
    assert [box.state for box in drawing.boxes if box.initial] == [lifecycle.initial]
    assert {box.state for box in drawing.boxes if box.terminal} == lifecycle.terminal


def test_the_flow_diagram_fans_out_from_in_progress() -> None:
    drawing: Diagram = layout(FLOW)
    assert [(a.source, a.dest, a.label) for a in drawing.arrows] == [
        ("in_progress", "completed", None),
        ("in_progress", "failed", None),
        ("in_progress", "cancelled", None),
        ("in_progress", "rejected", "flow_rejected"),
        ("in_progress", "timed_out", None),
    ]
    column = {box.state: box.x for box in drawing.boxes}
    assert {x for state, x in column.items() if state != "in_progress"} == {
        column["in_progress"] + 236
    }


def test_the_sparkline_has_a_point_per_minute_and_zero_for_quiet_ones() -> None:
    line = sparkline({"2025-11-28T11:59": 4, "2025-11-28T11:01": 2, "2025-11-28T10:00": 9}, NOON)
    assert len(line.minutes) == MINUTES
    assert line.minutes[0] == ("2025-11-28T11:01", 2)
    assert line.minutes[-1] == ("2025-11-28T12:00", 0)
    assert (line.total, line.peak) == (6, 4)
    points = line.line.split()
    assert len(points) == MINUTES
    assert points[0] == f"0.0,{64 - 2 - 60 * 2 / 4:.1f}"
    assert first_minute(NOON) == "2025-11-28T11:01"


def test_an_empty_hour_is_a_flat_line() -> None:
    line = sparkline({}, NOON)
    assert (line.total, line.peak) == (0, 0)
    assert {point.split(",")[1] for point in line.line.split()} == {"62.0"}


def test_callbacks_are_counted_per_minute_and_forgotten_after_a_day(
    store: SQLiteStore, clock: Clock
) -> None:
    pipeline = Pipeline(store, clock)
    start = clock()
    pipeline.ingest([_parsed(flow("custom", 1)), _parsed(flow("custom", 2))])
    pipeline.ingest([_parsed(flow("custom", 1))])  # a duplicate counts: it was received
    clock.advance(60)
    pipeline.ingest([_parsed(flow("custom", 3))])
    minute = _minute(start)
    assert store.received_since("0") == {minute: 3, _minute(start + 60 * 10**9): 1}
    clock.advance(86_400)
    pipeline.ingest([_parsed(flow("custom", 4))])
    assert store.received_since("0") == {
        _minute(start + 60 * 10**9): 1,
        _minute(start + (86_400 + 60) * 10**9): 1,
    }
    assert store.received_since(_minute(start + 120 * 10**9)) == {
        _minute(start + (86_400 + 60) * 10**9): 1
    }


def _parsed(body: bytes) -> Callback:
    return parse_flow(body, "application/json")


def _minute(ns: int) -> str:
    return format_ns(ns)[:16]
