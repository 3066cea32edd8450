"""The read models as plain text for a terminal (`flowtracker status`, `quarantine`)."""

from __future__ import annotations

from typing import Any


def summary_text(data: dict[str, Any]) -> str:
    """`summaries.status` as aligned lines, naming only the counts that are not zero."""

    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{name} {n}" for name, n in values.items() if n) or "none"

    return "\n".join(
        [
            f"callbacks    {counts(data['callbacks'])}",
            f"out of order {data['out_of_order']}",
            f"quarantined  {data['quarantined']}",
            f"instances    {counts(data['instances'])}",
            f"documents    {counts(data['documents'])}",
            f"stuck        {data['stuck']}",
            *_pruned(data["pruned"]),
            f"last callback {data['last_callback_at'] or 'never'}",
        ]
    )


def _pruned(pruned: dict[str, int]) -> list[str]:
    """The line of subjects pruned by retention, when there are some."""
    if not any(pruned.values()):
        return []
    return [f"pruned       instances {pruned['flow']}, documents {pruned['document']}"]


def instance_text(data: dict[str, Any]) -> str:
    """`views.instance` as a header and one line per event, in event-time order."""
    lines = [
        f"flow instance {data['id']}: {data['state']}"
        f"{' (terminal)' if data['terminal'] else ''}, {data['anomalies']} anomalies"
        + _unknown(data)
    ]
    for event in data["events"]:
        lines.append(_history_line(event["event_created"], event["type"], event))
    return "\n".join(lines)


def document_text(data: dict[str, Any]) -> str:
    """`views.document` as a header and one line per snapshot, in order."""
    sealed = ", signed and sealed" if data["signed_and_sealed"] else ""
    lines = [
        f"document {data['id']} {data['title']!r}: {data['state']}, object_version "
        f"{data['object_version']}{sealed}, {data['anomalies']} anomalies" + _unknown(data)
    ]
    for snapshot in data["snapshots"]:
        label = f"{snapshot['state']} v{snapshot['object_version']}"
        lines.append(_history_line(snapshot["mtime"], label, snapshot))
    return "\n".join(lines)


def _unknown(data: dict[str, Any]) -> str:
    at = data.get("unknown_to_scrive_at")
    return f" (unknown to Scrive's API since {at})" if at else ""


def _history_line(at: str, label: str, event: dict[str, Any]) -> str:
    marks = [event["outcome"]]
    if event["out_of_order"]:
        marks.append("out of order")
    if event.get("source") == "reconcile":
        marks.append("reconciled from Scrive's API")
    if event["deliveries"] > 1:
        marks.append(f"{event['deliveries']} deliveries")
    reason = f": {event['reason']}" if event["reason"] else ""
    return f"  {at:<32} {label:<38} {', '.join(marks)}{reason}"


def clip(text: str, width: int) -> str:
    """One line of at most `width` characters."""
    flat = text.replace("\n", " ")
    return flat if len(flat) <= width else flat[: width - 1] + "…"
