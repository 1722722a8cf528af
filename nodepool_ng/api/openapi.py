"""The OpenAPI 3 description of the REST request API, written by hand (served at
`/api/v1/openapi.json`). `app.py` and `validate.py` are what it describes."""

from __future__ import annotations

from typing import Any

from nodepool_ng.api.validate import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_PRIORITY,
    MAX_LEASE_SECONDS,
)
from nodepool_ng.model.lease import LeaseState

_ERROR = {"$ref": "#/components/schemas/Error"}
_LEASE = {"$ref": "#/components/schemas/Lease"}


def _response(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


_ERRORS = {
    "400": _response("Bad input; `field` names it", _ERROR),
    "401": _response("No or an unknown API token", _ERROR),
    "403": _response("Not allowed for this token (a label, another token's request)", _ERROR),
    "404": _response("No such request, or the API is off (no webapp.api-tokens)", _ERROR),
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
       "description": "The request's id (its node request's: `<priority>-<sequence>`)"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "field"],
        "properties": {
            "error": {"type": "string"},
            "field": {"type": "string", "nullable": True,
                      "description": "The input field at fault, if one is"},
        },
    },
    "CreateRequest": {
        "type": "object",
        "required": ["labels"],
        "additionalProperties": False,
        "properties": {
            "labels": {"type": "array", "minItems": 1, "items": {"type": "string"},
                       "description": "One node per label; all served by one pool"},
            "lease_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_LEASE_SECONDS,
                              "default": DEFAULT_LEASE_SECONDS},
            "provider": {"type": "string", "description": "Only this provider serves it"},
            "priority": {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 999},
                                   {"type": "string", "pattern": "^[0-9]{3}$"}],
                         "default": DEFAULT_PRIORITY,
                         "description": "Node request priority; lower is served first"},
        },
    },
    "RenewRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "lease_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_LEASE_SECONDS,
                              "description": "The new expiry is this many seconds from now "
                                             "(default: the lease's lease_seconds)"},
        },
    },
    "Node": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "label": {"type": "string"},
            "provider": {"type": "string"},
            "interface_ip": {"type": "string", "nullable": True},
            "public_ipv4": {"type": "string", "nullable": True},
            "private_ipv4": {"type": "string", "nullable": True},
            "username": {"type": "string", "nullable": True},
            "connection_port": {"type": "integer"},
            "host_keys": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Lease": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": [s.value for s in LeaseState]},
            "requestor": {"type": "string", "description": "The API token's name"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "provider": {"type": "string", "nullable": True},
            "lease_seconds": {"type": "integer"},
            "expires": {"type": "number", "description": "Epoch seconds"},
            "created": {"type": "number"},
            "state_time": {"type": "number"},
            "failure_reason": {"type": "string", "nullable": True},
            "nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"},
                      "description": "The nodes, once fulfilled"},
        },
    },
}


def openapi(base: str) -> dict[str, Any]:
    """The description; `base` is where the API is mounted (e.g. `/api/v1`)."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "nodepool_ng REST request API", "version": "1",
                 "description": "Get nodes for a lease of limited time, through an ordinary "
                                "node request served like Zuul's."},
        "servers": [{"url": base or "/"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/requests": {
                "post": {
                    "summary": "Request nodes for a lease",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/CreateRequest"}}}},
                    "responses": {
                        "201": _response("Requested; Location names it", _LEASE),
                        **_ERRORS,
                        "429": _response("Over the token's max-nodes", _ERROR),
                    },
                },
                "get": {
                    "summary": "The token's requests",
                    "parameters": [{"name": "requestor", "in": "query",
                                    "schema": {"type": "string"},
                                    "description": "Must be the token's own name"}],
                    "responses": {"200": _response("Its leases", {
                        "type": "object",
                        "properties": {"requests": {"type": "array", "items": _LEASE}}}),
                        **_ERRORS},
                },
            },
            "/requests/{id}": {
                "parameters": [_ID],
                "get": {
                    "summary": "One request; with wait, once its state differs from since",
                    "parameters": [
                        {"name": "wait", "in": "query",
                         "schema": {"type": "number", "minimum": 0, "maximum": 60},
                         "description": "Seconds to wait for a state change"},
                        {"name": "since", "in": "query",
                         "schema": {"type": "string", "enum": [s.value for s in LeaseState]},
                         "description": "The state the client saw last: with wait, a lease "
                                        "in another state is answered at once, else at "
                                        "its next change. Absent: the wait is for a change "
                                        "from the state when the call came (a change "
                                        "between two calls is then missed)"},
                    ],
                    "responses": {"200": {
                        **_response("The lease", _LEASE),
                        "headers": {"Retry-After": {
                            "schema": {"type": "integer"},
                            "description": "Present when the launcher had no free wait slot: "
                                           "the current state was answered at once; poll "
                                           "again after this many seconds"}}},
                        **_ERRORS},
                },
                "delete": {
                    "summary": "Return the nodes, or cancel the waiting request",
                    "responses": {"200": _response("The lease", _LEASE), **_ERRORS},
                },
            },
            "/requests/{id}/renew": {
                "parameters": [_ID],
                "post": {
                    "summary": "Push the expiry back",
                    "requestBody": {"required": False, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/RenewRequest"}}}},
                    "responses": {
                        "200": _response("The lease", _LEASE),
                        **_ERRORS,
                        "409": _response("The lease is finished", _ERROR),
                    },
                },
            },
            "/openapi.json": {
                "get": {"summary": "This description", "security": [],
                        "responses": {"200": _response("OpenAPI 3")}},
            },
        },
    }
