"""The component schemas of the OpenAPI document: every body the API takes or gives."""

from __future__ import annotations

from typing import Any

from flowtracker.engine.lifecycles import FLOW_STATES

JSON = dict[str, Any]
NULLABLE_STRING: JSON = {"type": ["string", "null"]}


def ref(name: str) -> JSON:
    """A reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: dict[str, JSON], optional: dict[str, JSON] | None = None) -> JSON:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def _delivery() -> JSON:
    return {
        "received_at": {"type": "string"},
        "last_delivery_at": {"type": "string"},
        "outcome": {"enum": ["applied", "illegal", "ignored"]},
        "out_of_order": {"type": "boolean"},
        # 0 for an answer of Scrive's API: reconciliation is no delivery
        "deliveries": {"type": "integer", "minimum": 0},
        "reason": NULLABLE_STRING,
        "source": {"enum": ["callback", "reconcile"]},
        # null only with `payload_error`: stored before the nesting limit, too deep to serve
        "payload": {"type": ["object", "null"]},
    }


UNKNOWN_TO_SCRIVE: JSON = {
    "type": ["string", "null"],
    "description": "when Scrive's API last answered 404 for it (an anomaly)",
}
# The optional properties of an event or snapshot.
PAYLOAD_ERROR = {"payload_error": {"type": "string", "description": "why `payload` is null"}}


def schemas() -> JSON:
    """Every component schema, by name."""
    instance_summary = _object(
        {
            "id": {"type": "string"},
            "state": {"enum": list(FLOW_STATES)},
            "terminal": {"type": "boolean"},
            "first_event_at": {"type": "string"},
            "last_event_at": {"type": "string"},
            "last_received_at": NULLABLE_STRING,
            "event_count": {"type": "integer"},
            "anomalies": {"type": "integer"},
            "unknown_to_scrive_at": UNKNOWN_TO_SCRIVE,
        }
    )
    document_summary = _object(
        {
            "id": {"type": "string"},
            "state": {"type": "string"},
            "final": {"type": "boolean"},
            "object_version": {"type": ["integer", "null"]},
            "signed_and_sealed": {"type": ["boolean", "null"]},
            "title": NULLABLE_STRING,
            "mtime": NULLABLE_STRING,
            "last_received_at": NULLABLE_STRING,
            "snapshot_count": {"type": "integer"},
            "anomalies": {"type": "integer"},
            "unknown_to_scrive_at": UNKNOWN_TO_SCRIVE,
        }
    )
    flow_event = _object(
        {"type": {"type": "string"}, "event_created": {"type": "string"}, **_delivery()},
        PAYLOAD_ERROR,
    )
    snapshot = _object(
        {
            "state": {"type": "string"},
            "object_version": {"type": "integer"},
            "mtime": {"type": "string"},
            # null: not known (a snapshot from Scrive's API)
            "signed_and_sealed": {"type": ["boolean", "null"]},
            **_delivery(),
        },
        PAYLOAD_ERROR,
    )
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    quarantined = _object(
        {
            "id": {"type": "string"},
            "body": {"type": "string"},
            "content_type": NULLABLE_STRING,
            "error": ref("ErrorObject"),
            "source": NULLABLE_STRING,
            "first_seen": {"type": "string"},
            "last_seen": {"type": "string"},
            "count": {"type": "integer"},
        }
    )

    def page(item: str) -> JSON:
        return _object({"items": {"type": "array", "items": ref(item)}, "next": NULLABLE_STRING})

    return {
        "Error": _object({"error": ref("ErrorObject")}),
        "ErrorObject": _object(
            {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}}
        ),
        "Receipt": _object(
            {
                "outcome": {"enum": ["applied", "illegal", "ignored", "duplicate"]},
                "out_of_order": {"type": "boolean"},
                "reason": NULLABLE_STRING,
                "subject": _object(
                    {
                        "kind": {"enum": ["flow", "document"]},
                        "id": {"type": "string"},
                        "state": {"type": "string"},
                    }
                ),
            }
        ),
        "FlowCallback": {
            **_object(
                {
                    "type": {"type": "string"},
                    "version": {"type": "integer"},
                    "flow_instance_id": {"type": "string", "format": "uuid"},
                    "event_created": {"type": "string", "format": "date-time"},
                }
            ),
            "description": "A Scrive Flow callback; each known type has its own extra fields.",
        },
        "DocumentCallbackForm": _object(
            {
                "document_id": {"type": "string"},
                "document_signed_and_sealed": {"enum": ["true", "false"]},
                "document_json": {"type": "string", "description": "The document as JSON text"},
            }
        ),
        "DocumentCallbackJSON": _object(
            {
                "document_id": {"type": "string"},
                "document_signed_and_sealed": {"type": ["boolean", "string"]},
                "document_json": {"type": ["object", "string"]},
            }
        ),
        "InstanceSummary": instance_summary,
        "Instance": {
            **instance_summary,
            "required": [*instance_summary["required"], "events"],
            "properties": {
                **instance_summary["properties"],
                "events": {"type": "array", "items": flow_event},
            },
        },
        "InstancePage": page("InstanceSummary"),
        "DocumentSummary": document_summary,
        "Document": {
            **document_summary,
            "required": [*document_summary["required"], "snapshots"],
            "properties": {
                **document_summary["properties"],
                "snapshots": {"type": "array", "items": snapshot},
            },
        },
        "DocumentPage": page("DocumentSummary"),
        "Status": _object(
            {
                "version": {"type": "string"},
                "uptime_seconds": {"type": ["number", "null"]},
                "callbacks": counts,
                "out_of_order": {"type": "integer"},
                "quarantined": {"type": "integer"},
                "pruned": _object({"flow": {"type": "integer"}, "document": {"type": "integer"}}),
                "instances": counts,
                "documents": counts,
                "stuck": {"type": "integer"},
                "last_callback_at": NULLABLE_STRING,
            }
        ),
        "Anomalies": _object(
            {
                "events": {"type": "array", "items": {"type": "object"}},
                "quarantine": {"type": "array", "items": ref("Quarantined")},
            }
        ),
        "Quarantined": quarantined,
        "QuarantinePage": page("Quarantined"),
        "Retried": _object(
            {
                "accepted": {"type": "array", "items": {"type": "object"}},
                "refused": {"type": "array", "items": {"type": "object"}},
            }
        ),
        "Deleted": _object({"deleted": {"type": "integer"}}),
        "Health": _object({"status": {"enum": ["ok"]}}),
        "Change": _object(
            {
                "seq": {"type": "integer"},
                "kind": {"enum": ["flow", "document"]},
                "subject": {"type": "string"},
                "state": {"type": "string"},
                "previous": NULLABLE_STRING,
                "terminal": {"type": "boolean"},
                "correction": {"type": "boolean"},
                "source": {"enum": ["callback", "rebuild", "reconcile"]},
                "event": {"type": "object"},
                "at": {"type": "string"},
            }
        ),
        "ChangePage": _object(
            {"items": {"type": "array", "items": ref("Change")}, "next": {"type": "integer"}}
        ),
    }
