"""A lifecycle laid out for drawing: boxes in columns by distance from the initial state,
and the arrows between them as SVG path data. The dashboard renders it as inline SVG.

The layout is computed from the lifecycle the engine runs (its states, initial and
terminal states, and `arrows`), so the picture cannot drift from the rules.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cache

from flowtracker.engine.lifecycles import Lifecycle

BOX_WIDTH, BOX_HEIGHT = 136, 34
COLUMN, ROW = 236, 48  # distance between box origins
MARGIN = 16


@dataclass(frozen=True, slots=True)
class Box:
    state: str
    x: int
    y: int
    initial: bool
    terminal: bool

    @property
    def middle(self) -> tuple[int, int]:
        return self.x + BOX_WIDTH // 2, self.y + BOX_HEIGHT // 2


@dataclass(frozen=True, slots=True)
class Arrow:
    source: str
    dest: str
    path: str  # SVG path data
    label: str | None  # the trigger, when its name is not the state it leads to
    label_at: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Diagram:
    width: int
    height: int
    boxes: tuple[Box, ...]
    arrows: tuple[Arrow, ...]
    box_width: int = BOX_WIDTH
    box_height: int = BOX_HEIGHT


@cache
def layout(lifecycle: Lifecycle) -> Diagram:
    """Columns by breadth-first distance from the initial state; in each column, boxes as
    close as they fit to the height of the boxes that lead to them."""
    column = _distances(lifecycle)
    columns: dict[int, list[str]] = {}
    for state in lifecycle.states:
        columns.setdefault(column[state], []).append(state)
    row: dict[str, float] = {}
    for number in sorted(columns):
        wanted = {state: _wanted_row(lifecycle, state, row) for state in columns[number]}
        ordered = sorted(columns[number], key=lambda state: wanted[state])
        centre = sum(wanted.values()) / len(ordered)
        for index, state in enumerate(ordered):
            row[state] = centre + index - (len(ordered) - 1) / 2
    top = min(row.values())
    boxes = {
        state: Box(
            state,
            MARGIN + column[state] * COLUMN,
            MARGIN + round((row[state] - top) * ROW),
            state == lifecycle.initial,
            state in lifecycle.terminal,
        )
        for state in lifecycle.states
    }
    arrows = tuple(
        _arrow(boxes[source], boxes[dest], None if trigger == dest else trigger, pairs)
        for pairs in [{(source, dest) for source, _, dest in lifecycle.arrows}]
        for source, trigger, dest in lifecycle.arrows
    )
    width = MARGIN * 2 + max(columns) * COLUMN + BOX_WIDTH
    height = MARGIN * 2 + max(box.y for box in boxes.values()) + BOX_HEIGHT - MARGIN
    return Diagram(width, height, tuple(boxes.values()), arrows)


def _wanted_row(lifecycle: Lifecycle, state: str, placed: dict[str, float]) -> float:
    """The mean row of the boxes already placed that have an arrow to `state`."""
    rows = [placed[s] for s, _, d in lifecycle.arrows if d == state and s in placed]
    return sum(rows) / len(rows) if rows else 0.0


def _distances(lifecycle: Lifecycle) -> dict[str, int]:
    """Arrows from the initial state outward; a state no arrow reaches goes last."""
    distance = {lifecycle.initial: 0}
    queue = deque([lifecycle.initial])
    while queue:
        state = queue.popleft()
        for source, _, dest in lifecycle.arrows:
            if source == state and dest not in distance:
                distance[dest] = distance[state] + 1
                queue.append(dest)
    unreached = max(distance.values()) + 1
    return {state: distance.get(state, unreached) for state in lifecycle.states}


def _arrow(source: Box, dest: Box, label: str | None, pairs: set[tuple[str, str]]) -> Arrow:
    (sx, sy), (dx, dy) = source.middle, dest.middle
    if dest.x == source.x:  # same column: bottom to top, or top to bottom
        down = dest.y > source.y
        y1 = source.y + BOX_HEIGHT if down else source.y
        y2 = dest.y if down else dest.y + BOX_HEIGHT
        path = f"M{sx},{y1} L{dx},{y2}"
        return Arrow(source.state, dest.state, path, label, (sx + 6, (y1 + y2) // 2))
    forward = dest.x > source.x
    paired = (dest.state, source.state) in pairs and sy == dy
    if not forward and not paired:  # back: out of the left, into the box from below
        x1, y2 = source.x, dest.y + BOX_HEIGHT
        path = f"M{x1},{sy} C{x1 - 60},{sy} {dx},{y2 + 40} {dx},{y2}"
        return Arrow(source.state, dest.state, path, label, ((x1 + dx) // 2, y2 + 24))
    if paired:  # both ways on one row: two arrows side by side
        sy, dy = (sy - 6, dy - 6) if forward else (sy + 6, dy + 6)
    # right edge to left edge going forward, left edge to right edge going back
    x1, x2 = (source.x + BOX_WIDTH, dest.x) if forward else (source.x, dest.x + BOX_WIDTH)
    bend = (x2 - x1) // 2
    path = f"M{x1},{sy} C{x1 + bend},{sy} {x2 - bend},{dy} {x2},{dy}"
    # A label sits just before the arrowhead, above the line, clear of the fan-out.
    at = (x2 - 48, dy - 6) if forward else ((x1 + x2) // 2, (sy + dy) // 2 - 5)
    return Arrow(source.state, dest.state, path, label, at)
