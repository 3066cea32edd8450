"""The OpenAPI 3.1 document of the API, written out by hand so that it says exactly what
the service does (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..lifecycles import DOCUMENT_NEW, DOCUMENT_STATES, FLOW_STATES
from ..views import MAX_LIMIT

JSON = dict[str, Any]
NULLABLE_STRING: JSON = {"type": ["string", "null"]}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: dict[str, JSON], optional: dict[str, JSON] | None = None) -> JSON:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def _json_response(description: str, schema: JSON) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, JSON]:
    words = {
        400: "The body cannot be parsed (invalid_json, invalid_form); kept in quarantine",
        401: "The token is missing or wrong (unauthorized)",
        404: "No such instance, document or path (not_found)",
        413: "The body is over the limit (payload_too_large); kept in quarantine",
        415: "A content type that cannot carry the callback; kept in quarantine",
        422: "Not a valid callback (invalid_event) or query (invalid_query)",
        503: "The database cannot take the request now (storage_unavailable); retry",
    }
    return {str(s): _json_response(words[s], _ref("Error")) for s in statuses}


def _delivery() -> JSON:
    return {
        "received_at": {"type": "string"},
        "last_delivery_at": {"type": "string"},
        "outcome": {"enum": ["applied", "illegal", "ignored"]},
        "out_of_order": {"type": "boolean"},
        "deliveries": {"type": "integer", "minimum": 1},
        "reason": NULLABLE_STRING,
        "payload": {"type": "object"},
    }


def _schemas() -> JSON:
    instance_summary = _object(
        {
            "id": {"type": "string"},
            "state": {"enum": list(FLOW_STATES)},
            "terminal": {"type": "boolean"},
            "first_event_at": {"type": "string"},
            "last_event_at": {"type": "string"},
            "last_received_at": {"type": "string"},
            "event_count": {"type": "integer"},
            "anomalies": {"type": "integer"},
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
            "last_received_at": {"type": "string"},
            "snapshot_count": {"type": "integer"},
            "anomalies": {"type": "integer"},
        }
    )
    flow_event = _object(
        {"type": {"type": "string"}, "event_created": {"type": "string"}, **_delivery()}
    )
    snapshot = _object(
        {
            "state": {"type": "string"},
            "object_version": {"type": "integer"},
            "mtime": {"type": "string"},
            "signed_and_sealed": {"type": "boolean"},
            **_delivery(),
        }
    )
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    quarantined = _object(
        {
            "id": {"type": "string"},
            "body": {"type": "string"},
            "content_type": NULLABLE_STRING,
            "error": _ref("ErrorObject"),
            "source": NULLABLE_STRING,
            "first_seen": {"type": "string"},
            "last_seen": {"type": "string"},
            "count": {"type": "integer"},
        }
    )

    def page(item: str) -> JSON:
        return _object({"items": {"type": "array", "items": _ref(item)}, "next": NULLABLE_STRING})

    return {
        "Error": _object({"error": _ref("ErrorObject")}),
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
                "instances": counts,
                "documents": counts,
                "stuck": {"type": "integer"},
                "last_callback_at": NULLABLE_STRING,
            }
        ),
        "Anomalies": _object(
            {
                "events": {"type": "array", "items": {"type": "object"}},
                "quarantine": {"type": "array", "items": _ref("Quarantined")},
            }
        ),
        "Quarantined": quarantined,
        "QuarantinePage": page("Quarantined"),
        "Health": _object({"status": {"enum": ["ok"]}}),
    }


def _parameter(name: str, schema: JSON, where: str = "query", description: str = "") -> JSON:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


PAGE = [
    _parameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}),
    _parameter("cursor", {"type": "string"}, description="`next` of the previous page"),
]


def _read(summary: str, schema: str, parameters: list[JSON], *errors: int) -> JSON:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "security": [{"read": []}],
            "responses": {
                "200": _json_response(summary, _ref(schema)),
                **_errors(401, *errors, 503),
            },
        }
    }


def _callback(summary: str, content: JSON) -> JSON:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": content},
            "parameters": [
                _parameter(
                    "token",
                    {"type": "string"},
                    description="The callback token, if not sent in a header",
                )
            ],
            "security": [{}, {"token": []}, {"basic": []}, {"read": []}],
            "responses": {
                "200": _json_response("Stored (whatever its outcome)", _ref("Receipt")),
                **_errors(400, 401, 413, 415, 422, 503),
            },
        }
    }


def openapi_document() -> JSON:
    """The whole OpenAPI document."""
    flow_filters = [
        _parameter("state", {"enum": list(FLOW_STATES)}),
        _parameter("anomalous", {"type": "boolean"}, description="only with anomalies"),
        _parameter("stuck", {"type": "boolean"}, description="in progress and quiet too long"),
        *PAGE,
    ]
    document_filters = [
        _parameter("state", {"enum": [DOCUMENT_NEW, *DOCUMENT_STATES]}),
        _parameter("anomalous", {"type": "boolean"}),
        *PAGE,
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flowtracker",
            "version": __version__,
            "description": "State of Scrive Flow instances and documents, from callbacks.",
        },
        "paths": {
            "/callbacks/flow": _callback(
                "Receive a Scrive Flow callback",
                {"application/json": {"schema": _ref("FlowCallback")}},
            ),
            "/callbacks/document": _callback(
                "Receive a Scrive document callback (Document API v2 or v1 names)",
                {
                    "application/x-www-form-urlencoded": {"schema": _ref("DocumentCallbackForm")},
                    "application/json": {"schema": _ref("DocumentCallbackJSON")},
                },
            ),
            "/instances": _read("Flow instances", "InstancePage", flow_filters, 422),
            "/instances/{instance_id}": _read(
                "One flow instance with its events",
                "Instance",
                [_parameter("instance_id", {"type": "string"}, "path")],
                404,
            ),
            "/documents": _read("Documents", "DocumentPage", document_filters, 422),
            "/documents/{document_id}": _read(
                "One document with its snapshots",
                "Document",
                [_parameter("document_id", {"type": "string"}, "path")],
                404,
            ),
            "/status": _read("Totals for an operator", "Status", []),
            "/anomalies": _read("Newest illegal, late and quarantined", "Anomalies", PAGE[:1], 422),
            "/quarantine": _read(
                "Malformed requests kept, newest first", "QuarantinePage", PAGE, 422
            ),
            "/healthz": {
                "get": {
                    "summary": "Whether the database answers",
                    "security": [],
                    "responses": {"200": _json_response("ok", _ref("Health")), **_errors(503)},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "query", "name": "token"},
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The callback token as the password",
                },
                "read": {"type": "http", "scheme": "bearer"},
            },
        },
    }
