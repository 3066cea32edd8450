"""Every (state, trigger) pair of both lifecycles, against the spec's rules written out again."""

import pytest

from flowtracker.engine.events import FLOW_FIELDS
from flowtracker.engine.fold import Verdict, judge
from flowtracker.engine.lifecycles import DOCUMENT, DOCUMENT_STATES, FLOW, FLOW_STATES, Lifecycle

TERMINAL_OF = {
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "flow_rejected": "rejected",
    "timed_out": "timed_out",
}
STAYS = {"authentication_attempted", "authentication_max_failures_exceeded", "custom"}


def expected_flow(state: str, trigger: str) -> tuple[str, Verdict]:
    if state == "in_progress":
        return TERMINAL_OF.get(trigger, state), Verdict("applied")
    if TERMINAL_OF.get(trigger) == state or trigger in STAYS - {"custom"}:
        return state, Verdict("applied")
    return state, Verdict("illegal", f"instance already {state}")


# Reachable statuses from each status, worked out by hand from the spec's graph.
REACHABLE = {
    "preparation": {
        "awaiting_start",
        "pending",
        "closed",
        "canceled",
        "rejected",
        "timedout",
        "document_error",
    },
    "awaiting_start": {"pending", "closed", "canceled", "rejected", "timedout", "document_error"},
    "pending": {"closed", "canceled", "rejected", "timedout", "document_error"},
    "timedout": {"pending", "closed", "canceled", "rejected", "document_error"},
    "closed": {"document_error"},
    "document_error": {"closed"},
    "canceled": set(),
    "rejected": set(),
}


def expected_document(state: str, status: str) -> tuple[str, Verdict]:
    if state == "new" or status == state or status in REACHABLE[state]:
        return status, Verdict("applied")
    if state in ("canceled", "rejected"):
        return state, Verdict(
            "illegal", f"document already {state} (final); {status} is not allowed"
        )
    return state, Verdict("illegal", f"document is {state}; {status} is not reachable from {state}")


def test_the_flow_triggers_are_the_flow_callback_types() -> None:
    assert set(FLOW.triggers) == set(FLOW_FIELDS)


def test_the_document_triggers_are_the_statuses() -> None:
    assert set(DOCUMENT.triggers) == set(DOCUMENT_STATES)


@pytest.mark.parametrize("state", FLOW_STATES)
@pytest.mark.parametrize("trigger", sorted(FLOW_FIELDS))
def test_flow_lifecycle(state: str, trigger: str) -> None:
    assert judge(FLOW, state, trigger, 1) == expected_flow(state, trigger)


@pytest.mark.parametrize("state", ("new", *DOCUMENT_STATES))
@pytest.mark.parametrize("status", DOCUMENT_STATES)
def test_document_lifecycle(state: str, status: str) -> None:
    assert judge(DOCUMENT, state, status, None) == expected_document(state, status)


@pytest.mark.parametrize(
    ("lifecycle", "trigger", "reason"),
    [
        (FLOW, "signatory_opened", "unknown callback type 'signatory_opened'"),
        (DOCUMENT, "archived", "unknown status 'archived'"),
    ],
)
def test_unknown_triggers_are_ignored(lifecycle: Lifecycle, trigger: str, reason: str) -> None:
    assert judge(lifecycle, lifecycle.initial, trigger, lifecycle.version) == (
        lifecycle.initial,
        Verdict("ignored", reason),
    )


@pytest.mark.parametrize("version", [0, 2, None])
def test_another_flow_callback_version_is_ignored(version: int | None) -> None:
    assert judge(FLOW, "in_progress", "completed", version) == (
        "in_progress",
        Verdict("ignored", f"unsupported version {version}"),
    )


def test_transitions_must_be_plain_data() -> None:
    with pytest.raises(ValueError, match="must be plain data, not \\['conditions'\\]"):
        Lifecycle(
            states=["a", "b"],
            initial="a",
            terminal=[],
            trigger_noun="t",
            transitions=[{"trigger": "go", "source": "a", "dest": "b", "conditions": "ok"}],
            refusal=lambda state, trigger: "no",
            version=None,
            superseded=lambda history: lambda entry: None,
        )


def test_table_lists_every_pair_once() -> None:
    assert len(FLOW.table()) == len(FLOW_STATES) * len(FLOW_FIELDS)
    assert len(DOCUMENT.table()) == (len(DOCUMENT_STATES) + 1) * len(DOCUMENT_STATES)


def test_machines_have_no_models_and_no_auto_transitions() -> None:
    for lifecycle in (FLOW, DOCUMENT):
        machine = lifecycle._machine
        assert machine.models == []
        assert not any(name.startswith("to_") for name in machine.events)
