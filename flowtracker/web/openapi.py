"""The OpenAPI 3.1 document of the API, written out by hand so that it says exactly what
the service does (served at /openapi.json). The bodies are in `openapi_schemas`."""

from __future__ import annotations

from flowtracker import __version__
from flowtracker.engine.lifecycles import DOCUMENT_NEW, DOCUMENT_STATES, FLOW_STATES
from flowtracker.reads.views import MAX_LIMIT
from flowtracker.web.openapi_schemas import JSON, ref, schemas


def _json_response(description: str, schema: JSON) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, JSON]:
    words = {
        400: "The body cannot be parsed (invalid_json, invalid_form); kept in quarantine",
        401: "The token is missing or wrong (unauthorized)",
        403: "Actions that change data are off: no FLOWTRACKER_ADMIN_TOKEN (admin_actions_off)",
        404: "No such instance, document or path (not_found)",
        408: "The body did not arrive in time (request_timeout); kept in quarantine",
        410: "Gone: the cursor is older than the changes kept (cursor_expired: "
        "resynchronise), or the subject was pruned by retention (pruned: `details` holds "
        "its final state)",
        413: "The body is over the limit (payload_too_large); kept in quarantine",
        415: "A content type that cannot carry the callback; kept in quarantine",
        422: "Not a valid callback (invalid_event) or query (invalid_query)",
        503: "The database cannot take the request now (storage_unavailable); retry",
    }
    return {str(s): _json_response(words[s], ref("Error")) for s in statuses}


def _parameter(name: str, schema: JSON, where: str = "query", description: str = "") -> JSON:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


ACTIVITY = [
    _parameter(
        "sort",
        {"enum": ["first_seen", "last_activity"], "default": "first_seen"},
        description="first seen (oldest first), or the last callback received first",
    ),
    _parameter(
        "since",
        {"type": "string"},
        description="the last callback received at or after (a date or RFC 3339)",
    ),
    _parameter(
        "until",
        {"type": "string"},
        description="the last callback received before (a date: to its end)",
    ),
]
PAGE = [
    _parameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}),
    _parameter("cursor", {"type": "string"}, description="`next` of the previous page"),
]


FEED = [
    _parameter("after", {"type": "integer", "minimum": 0}, description="a change's seq"),
    _parameter("kind", {"enum": ["flow", "document"]}),
    _parameter("subject", {"type": "string"}, description="one instance's or document's id"),
]
CHANGE_LIMIT = _parameter("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                    "default": 100})  # fmt: skip


def _read(summary: str, schema: str, parameters: list[JSON], *errors: int) -> JSON:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "security": [{"read": []}],
            "responses": {
                "200": _json_response(summary, ref(schema)),
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
            # The callback token, in any of its three places; never the read token.
            "security": [
                {},
                {"callback_query": []},
                {"callback_basic": []},
                {"callback_bearer": []},
            ],
            "responses": {
                "200": _json_response("Stored (whatever its outcome)", ref("Receipt")),
                **_errors(400, 401, 408, 413, 415, 422, 503),
            },
        }
    }


QUARANTINE_ID = _parameter("id", {"type": "string"}, "path")


def _admin(summary: str, parameters: list[JSON], schema: str, *errors: int) -> JSON:
    return {
        "summary": summary + " (needs the admin token)",
        "parameters": parameters,
        "security": [{"admin": []}],
        "responses": {
            "200": _json_response("Done", ref(schema)),
            **_errors(401, 403, *errors, 503),
        },
    }


def openapi_document() -> JSON:
    """The whole OpenAPI document."""
    flow_filters = [
        _parameter("state", {"enum": list(FLOW_STATES)}),
        _parameter("anomalous", {"type": "boolean"}, description="only with anomalies"),
        _parameter("stuck", {"type": "boolean"}, description="in progress and quiet too long"),
        *ACTIVITY,
        *PAGE,
    ]
    document_filters = [
        _parameter("state", {"enum": [DOCUMENT_NEW, *DOCUMENT_STATES]}),
        _parameter("anomalous", {"type": "boolean"}),
        *ACTIVITY,
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
                {"application/json": {"schema": ref("FlowCallback")}},
            ),
            "/callbacks/document": _callback(
                "Receive a Scrive document callback (Document API v2 or v1 names)",
                {
                    "application/x-www-form-urlencoded": {"schema": ref("DocumentCallbackForm")},
                    "application/json": {"schema": ref("DocumentCallbackJSON")},
                },
            ),
            "/instances": _read("Flow instances", "InstancePage", flow_filters, 422),
            "/instances/{instance_id}": _read(
                "One flow instance with its events",
                "Instance",
                [_parameter("instance_id", {"type": "string"}, "path")],
                404,
                410,
            ),
            "/documents": _read("Documents", "DocumentPage", document_filters, 422),
            "/documents/{document_id}": _read(
                "One document with its snapshots",
                "Document",
                [_parameter("document_id", {"type": "string"}, "path")],
                404,
                410,
            ),
            "/status": _read("Totals for an operator", "Status", []),
            "/anomalies": _read("Newest illegal, late and quarantined", "Anomalies", PAGE[:1], 422),
            "/quarantine": {
                **_read(
                    "Malformed requests kept, newest first",
                    "QuarantinePage",
                    [
                        *PAGE,
                        _parameter(
                            "code",
                            {"type": "string"},
                            description="only those refused with this error code",
                        ),
                    ],
                    422,
                ),
                "delete": _admin(
                    "Delete the kept requests last seen before a time",
                    [_parameter("before", {"type": "string"}, description="a date or RFC 3339")],
                    "Deleted",
                    422,
                ),
            },
            "/quarantine/retry": {
                "post": _admin(
                    "Run every kept request through the pipeline again (of one code)",
                    [_parameter("code", {"type": "string"})],
                    "Retried",
                )
            },
            "/quarantine/{id}/retry": {
                "post": _admin(
                    "Run one kept request through the pipeline again",
                    [QUARANTINE_ID],
                    "Retried",
                    404,
                )
            },
            "/quarantine/{id}": {
                "delete": _admin("Delete one kept request", [QUARANTINE_ID], "Deleted", 404)
            },
            "/changes": _read(
                "Changes after a cursor, oldest first (the change feed as pages)",
                "ChangePage",
                [*FEED, CHANGE_LIMIT],
                410,
                422,
            ),
            "/feed": {
                "get": {
                    "summary": "The change feed, live, as Server-Sent Events (id: seq, event: "
                    "change, data: the change); without a cursor, from the next commit",
                    "parameters": [
                        *FEED,
                        _parameter(
                            "Last-Event-ID",
                            {"type": "string"},
                            "header",
                            "the seq to resume after (instead of `after`)",
                        ),
                    ],
                    "security": [{"read": []}],
                    "responses": {
                        "200": {
                            "description": "A stream of changes, a comment line at least every "
                            "15 s",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 410, 422, 503),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Whether the database answers",
                    "security": [],
                    "responses": {"200": _json_response("ok", ref("Health")), **_errors(503)},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics: the totals of /status, request latency",
                    "security": [{"read": []}],
                    "responses": {
                        "200": {
                            "description": "Prometheus text format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 503),
                    },
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
            "schemas": schemas(),
            "securitySchemes": {
                "callback_query": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "The callback token (FLOWTRACKER_CALLBACK_TOKEN)",
                },
                "callback_basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The callback token as the password (any user name)",
                },
                "callback_bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The callback token (FLOWTRACKER_CALLBACK_TOKEN)",
                },
                "read": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The read token (FLOWTRACKER_READ_TOKEN)",
                },
                "admin": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (FLOWTRACKER_ADMIN_TOKEN): the "
                    "quarantine's actions; off when none is set (403 admin_actions_off)",
                },
            },
        },
    }
