"""The flow instance and document lifecycles, declared once as data and run by `transitions`.

Each lifecycle is one shared `transitions.Machine` with no model of its own. The machines
have no conditions or callbacks, so the answer for a (state, trigger) pair never changes:
every pair is fired once through the machine when the lifecycle is built, and the fold
looks the answer up. No machine or model object is ever made per instance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transitions import Machine, MachineError

from flowtracker.engine.events import FLOW_VERSION
from flowtracker.engine.records import Entry, Verdict

TransitionTable = Sequence[Mapping[str, Any]]
# Given a subject's whole history: which of its reconciled entries a callback supersedes,
# and the verdict they then get (None: the entry is judged like any other).
Superseding = Callable[[Sequence[Entry]], Callable[[Entry], Verdict | None]]

FLOW_STATES = ("in_progress", "completed", "failed", "cancelled", "rejected", "timed_out")
FLOW_TERMINAL = FLOW_STATES[1:]

# trigger = the Flow callback type; dest None = stays in its state (recorded in history).
FLOW_TRANSITIONS: TransitionTable = (
    {"trigger": "completed", "source": "in_progress", "dest": "completed"},
    {"trigger": "failed", "source": "in_progress", "dest": "failed"},
    {"trigger": "cancelled", "source": "in_progress", "dest": "cancelled"},
    {"trigger": "flow_rejected", "source": "in_progress", "dest": "rejected"},
    {"trigger": "timed_out", "source": "in_progress", "dest": "timed_out"},
    # Scrive sends one `completed` per document: the same terminal event again is harmless.
    {"trigger": "completed", "source": "completed", "dest": None},
    {"trigger": "failed", "source": "failed", "dest": None},
    {"trigger": "cancelled", "source": "cancelled", "dest": None},
    {"trigger": "flow_rejected", "source": "rejected", "dest": None},
    {"trigger": "timed_out", "source": "timed_out", "dest": None},
    # Participants can still open archived documents after the instance has ended.
    {"trigger": "authentication_attempted", "source": "*", "dest": None},
    {"trigger": "authentication_max_failures_exceeded", "source": "*", "dest": None},
    {"trigger": "custom", "source": "in_progress", "dest": None},
)

DOCUMENT_NEW = "new"
DOCUMENT_STATES = (
    "preparation",
    "awaiting_start",
    "pending",
    "closed",
    "canceled",
    "rejected",
    "timedout",
    "document_error",
)
DOCUMENT_FINAL = ("canceled", "rejected")
# The states in which a document is finished with (SPEC 14: what `prune` may remove).
DOCUMENT_FINISHED = ("closed", "canceled", "rejected", "timedout", "document_error")

# Scrive's document status graph. A snapshot may skip statuses: any reachable status is legal.
DOCUMENT_GRAPH: Mapping[str, tuple[str, ...]] = {
    "preparation": ("awaiting_start", "pending"),
    "awaiting_start": ("pending",),
    "pending": ("pending", "closed", "canceled", "rejected", "timedout"),
    "timedout": ("pending",),  # prolong
    "closed": ("closed", "document_error"),
    "document_error": ("closed",),
    "canceled": (),
    "rejected": (),
}


@dataclass(frozen=True, slots=True)
class Step:
    """Where a trigger leads from a state: the next state, or the reason it is refused."""

    state: str
    refusal: str | None = None


class Lifecycle:
    """One lifecycle: its states, its machine, and the verdict for every (state, trigger).

    `version` is the callback format version it understands (None: callbacks carry none).
    """

    def __init__(
        self,
        states: Sequence[str],
        initial: str,
        transitions: TransitionTable,
        terminal: Iterable[str],
        refusal: Callable[[str, str], str],
        trigger_noun: str,
        version: int | None,
        superseded: Superseding,
        arrows: Sequence[tuple[str, str, str]] | None = None,
    ) -> None:
        """`arrows` (source, trigger, dest) are what a diagram draws; by default every
        transition that changes the state. `superseded` is the rule for answers of
        Scrive's API (SPEC 13)."""
        _check_pure(transitions)
        self.states = tuple(states)
        self.initial = initial
        self.terminal = frozenset(terminal)
        self.trigger_noun = trigger_noun
        self.version = version
        self.superseded = superseded
        self._refusal = refusal
        self._machine = Machine(
            model=None,
            states=list(states),
            initial=initial,
            transitions=[dict(row) for row in transitions],
            auto_transitions=False,
        )
        self.triggers = tuple(self._machine.events)
        self.arrows = tuple(arrows) if arrows is not None else _moves(transitions)
        self._steps = {(s, t): self._fire(s, t) for s in self.states for t in self.triggers}
        # Triggers whose verdict depends on the state, or that change it.
        self.moving = frozenset(
            t for t in self.triggers if any(self._steps[(s, t)] != Step(s) for s in self.states)
        )

    def knows(self, trigger: str) -> bool:
        return trigger in self.triggers

    def step(self, state: str, trigger: str) -> Step:
        """The verdict of the machine for `trigger` in `state` (a known trigger)."""
        return self._steps[(state, trigger)]

    def table(self) -> list[tuple[str, str, str | None]]:
        """Every (state, trigger, next state or None when refused), for docs and tests."""
        return [
            (state, trigger, None if step.refusal else step.state)
            for (state, trigger), step in self._steps.items()
        ]

    def _fire(self, state: str, trigger: str) -> Step:
        probe = _Probe(state)
        try:
            self._machine.events[trigger].trigger(probe)
        except MachineError:
            return Step(state, self._refusal(state, trigger))
        return Step(probe.state)


class _Probe:
    """The plain object the machine fires on: it holds nothing but a state."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


def _check_pure(transitions: TransitionTable) -> None:
    """The verdict table is filled once, so the machine must not depend on anything else."""
    for row in transitions:
        extra = set(row) - {"trigger", "source", "dest"}
        if extra:
            raise ValueError(f"lifecycle transitions must be plain data, not {sorted(extra)}")


def _moves(transitions: TransitionTable) -> tuple[tuple[str, str, str], ...]:
    return tuple(
        (row["source"], row["trigger"], row["dest"])
        for row in transitions
        if row["dest"] is not None and row["source"] not in ("*", row["dest"])
    )


def document_transitions(graph: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Transitions that make every status reachable in `graph` legal, and a repeat legal."""
    rows: list[dict[str, Any]] = [
        {"trigger": status, "source": DOCUMENT_NEW, "dest": status} for status in graph
    ]
    for source in graph:
        for target in sorted(_reachable(graph, source) | {source}, key=list(graph).index):
            rows.append(
                {"trigger": target, "source": source, "dest": None if target == source else target}
            )
    return rows


def _reachable(graph: Mapping[str, Sequence[str]], start: str) -> set[str]:
    seen: set[str] = set()
    frontier = list(graph[start])
    while frontier:
        status = frontier.pop()
        if status not in seen:
            seen.add(status)
            frontier.extend(graph[status])
    return seen


def _flow_refusal(state: str, trigger: str) -> str:
    return f"instance already {state}"


def _document_refusal(state: str, trigger: str) -> str:
    if state in DOCUMENT_FINAL:
        return f"document already {state} (final); {trigger} is not allowed"
    return f"document is {state}; {trigger} is not reachable from {state}"


# The callbacks that end an instance: once one is stored, it decides (SPEC 13).
FLOW_ENDINGS = frozenset(
    row["trigger"] for row in FLOW_TRANSITIONS
    if row["source"] == "in_progress" and row["dest"] in FLOW_TERMINAL
)  # fmt: skip
SUPERSEDED_BY_CALLBACK = Verdict("ignored", "superseded by a callback")
ALREADY_KNOWN = Verdict("ignored", "already known")
# A callback for a subject that retention removed (SPEC 14): it stays removed.
PRUNED = Verdict("ignored", "pruned")


def _flow_superseded(history: Sequence[Entry]) -> Callable[[Entry], Verdict | None]:
    """A reconciled event stands for the terminal status it carries only while no
    callback that ends the instance is stored; then that callback decides."""
    ended = any(
        not e.reconciled and e.version == FLOW_VERSION and e.label in FLOW_ENDINGS for e in history
    )
    return lambda entry: SUPERSEDED_BY_CALLBACK if ended else None


def _document_superseded(history: Sequence[Entry]) -> Callable[[Entry], Verdict | None]:
    """A reconciled snapshot counts only when its object_version is newer than that of
    every snapshot a callback brought."""
    newest = max((e.position[0] for e in history if not e.reconciled), default=None)
    if newest is None:
        return lambda entry: None
    return lambda entry: ALREADY_KNOWN if entry.position[0] <= newest else None


FLOW = Lifecycle(
    states=FLOW_STATES,
    initial="in_progress",
    transitions=FLOW_TRANSITIONS,
    terminal=FLOW_TERMINAL,
    refusal=_flow_refusal,
    trigger_noun="callback type",
    version=FLOW_VERSION,
    superseded=_flow_superseded,
)

DOCUMENT = Lifecycle(
    states=(DOCUMENT_NEW, *DOCUMENT_STATES),
    initial=DOCUMENT_NEW,
    transitions=document_transitions(DOCUMENT_GRAPH),
    terminal=DOCUMENT_FINAL,
    refusal=_document_refusal,
    trigger_noun="status",
    version=None,
    superseded=_document_superseded,
    # Scrive's graph, not every reachable pair: a snapshot may skip along these arrows.
    arrows=[(DOCUMENT_NEW, "preparation", "preparation")]
    + [(a, b, b) for a, targets in DOCUMENT_GRAPH.items() for b in targets if a != b],
)

# The states of a finished subject, by kind: what `flowtracker prune` may remove.
FINISHED: dict[str, frozenset[str]] = {
    "flow": frozenset(FLOW_TERMINAL),
    "document": frozenset(DOCUMENT_FINISHED),
}
