"""The totals as read models: `/status` (and `flowtracker status --json`), and the counts
that `/metrics` exposes, both shaped from the store's `Totals`."""

from __future__ import annotations

from typing import Any

from flowtracker.engine.events import KINDS
from flowtracker.engine.lifecycles import DOCUMENT_STATES, FLOW_STATES
from flowtracker.engine.records import DELIVERY_OUTCOMES, OUTCOMES, RECONCILE_RESULTS
from flowtracker.engine.timestamps import format_ns
from flowtracker.reads.views import quiet_since
from flowtracker.store.protocol import Store
from flowtracker.store.rows import Totals


def status(
    store: Store,
    now_ns: int,
    *,
    stuck_age_ns: int,
    version: str,
    uptime_seconds: float | None,
) -> dict[str, Any]:
    """Totals for an operator: outcomes, states, anomalies, the quarantine, liveness."""
    totals = store.totals(quiet_since(now_ns, stuck_age_ns))
    now = {name: sum(totals.outcomes[kind].get(name, 0) for kind in KINDS) for name in OUTCOMES}
    return {
        "version": version,
        "uptime_seconds": uptime_seconds,
        "callbacks": {**now, "duplicate": sum(totals.duplicates.values())},
        "out_of_order": sum(totals.out_of_order.values()),
        **_holdings(totals),
    }


def counts(store: Store, now_ns: int, *, stuck_age_ns: int) -> dict[str, Any]:
    """What /metrics exposes: the holdings of `status`, and per kind the deliveries by the
    outcome they got on arrival (these only grow) and the out-of-order ones."""
    totals = store.totals(quiet_since(now_ns, stuck_age_ns))
    return {
        "callbacks": {
            kind: {name: totals.arrived[kind].get(name, 0) for name in DELIVERY_OUTCOMES}
            for kind in KINDS
        },
        "out_of_order": dict(totals.out_of_order),
        "quarantined_requests": totals.quarantined_requests,
        "reconciliations": {
            name: totals.reconciliations.get(name, 0) for name in RECONCILE_RESULTS
        },
        **_holdings(totals),
    }


def _holdings(totals: Totals) -> dict[str, Any]:
    """The quarantine, the subjects per state (every state, 0 included), stuck, last."""
    last = totals.last_callback_ns
    return {
        "quarantined": totals.quarantined,
        "pruned": {kind: totals.pruned.get(kind, 0) for kind in KINDS},
        "instances": {**dict.fromkeys(FLOW_STATES, 0), **totals.states["flow"]},
        "documents": {**dict.fromkeys(DOCUMENT_STATES, 0), **totals.states["document"]},
        "stuck": totals.stuck,
        "last_callback_at": format_ns(last) if last else None,
    }
