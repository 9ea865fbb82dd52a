"""The OpenAPI 3.1 document of the staff API (/api/v1), served at /api/v1/openapi.json.

Request bodies are the models the handlers validate with; answers are described by the
models below, which forbid undocumented fields, so the tests that check every answer
against this document keep it true.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from backend.services.workflow import STATES
from backend.web.api import ActionBody

REF = "#/components/schemas/{model}"


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Answer):
    field: str
    problem: str


class Error(_Answer):
    """Why a request was refused: a code, and what to do about it."""

    error: str
    detail: str | None = None
    problems: list[Problem] | None = None


class TicketSummary(_Answer):
    code: str
    state: str
    category: str
    ward_code: str
    unit: str | None
    urgency: str
    due_at: str | None
    overdue: bool
    created_at: str | None
    case: str | None


class TicketList(_Answer):
    tickets: list[TicketSummary]


class PhotoRef(_Answer):
    sha256: str
    kind: str


class Delivery(_Answer):
    """A notice to the reporter and whether it got through (never the chat id)."""

    notice: str | None
    channel: str
    status: str
    attempts: int
    last_error: str | None
    at: str | None


class TicketDetail(TicketSummary):
    category_name: str
    description: str
    polluter: str | None
    nature: str
    lat: float
    lon: float
    # The ward's centre, not the place itself (a ward picked or named without a point).
    approximate: bool
    address: str | None
    reporter: str | None
    result: str | None
    rating: int | None
    reopen_count: int
    escalation_count: int
    actions: list[str]
    photos: list[PhotoRef]
    deliveries: list[Delivery]
    timeline: list[dict[str, Any]]


class StoredMedia(_Answer):
    sha256: str
    content_type: Literal["image/jpeg"]


class StatsPeriod(_Answer):
    kind: Literal["month", "cut25"]
    month: str
    first_day: str
    last_day: str


class StatsScope(_Answer):
    province_code: str | None
    ward_code: str | None
    unit_id: int | None
    category_code: str | None
    name: str


class Stats(_Answer):
    """The monthly report (see the README's monthly statistics)."""

    period: StatsPeriod
    scope: StatsScope
    made_at: str
    total: dict[str, int | float | None]
    by_category: list[dict[str, str | int | float | None]]
    by_ward: list[dict[str, str | int | float | None]]
    steps: list[dict[str, Any]]
    problems: list[str]


_TIMELINE_ENTRY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["at", "actor", "action", "from", "to", "note"],
    "properties": {
        "at": {"type": ["string", "null"], "format": "date-time"},
        "actor": {"type": "string"},
        "action": {"type": "string"},
        "from": {"type": ["string", "null"]},
        "to": {"type": ["string", "null"]},
        "note": {"type": ["string", "null"]},
    },
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {
        400: "Bad request (malformed JSON, a NUL character, a bad query value)",
        401: "Not signed in",
        403: "Not allowed (role, CSRF token, scope, or a password change is due)",
        404: "No such ticket in the caller's scope",
        409: "The action does not apply in the ticket's state",
        413: "Body over the size limit",
        415: "Not an image",
        422: "The body or the action's requirements are not met",
        503: "The photo store did not answer: try again later",
    }
    return {str(s): _json("Error", words[s]) for s in statuses}


def _code_parameter() -> dict[str, Any]:
    return {
        "name": "code",
        "in": "path",
        "required": True,
        "description": "The ticket's tracking code, e.g. 38-2611-00001",
        "schema": {"type": "string", "pattern": "^[0-9]{2}-[0-9]{4}-[0-9]{5,}$", "maxLength": 20},
    }


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    """An optional query parameter: a string with the given constraints (the statistics
    take an empty value as not given, as the dashboard's filter form sends it)."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


@cache
def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (built once)."""
    _, defs = models_json_schema(
        [
            (ActionBody, "validation"),
            (Error, "serialization"),
            (TicketList, "serialization"),
            (TicketDetail, "serialization"),
            (StoredMedia, "serialization"),
            (Stats, "serialization"),
        ],
        ref_template=REF,
    )
    schemas = defs["$defs"]
    # The timeline's "from" is a Python keyword: described by hand.
    schemas["TicketDetail"]["properties"]["timeline"] = {
        "type": "array",
        "items": _TIMELINE_ENTRY,
    }
    security: list[dict[str, list[str]]] = [{"session": [], "csrf": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Pollution hotline staff API",
            "version": "1",
            "description": (
                "Tickets of the pollution hotline (QĐ 174/QĐ-BTNMT) for signed-in staff: "
                "every answer is scoped to what the caller may see, and reporters appear "
                "by pseudonym only. Changes need the session's CSRF token in X-CSRF-Token."
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "hotline_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
        },
        "security": [{"session": []}],
        "paths": {
            "/api/v1/tickets": {
                "get": {
                    "operationId": "listTickets",
                    "summary": "The caller's tickets, soonest due first (at most 500)",
                    "parameters": [
                        _query("state", "Only tickets in this state", enum=list(STATES)),
                        _query(
                            "overdue",
                            "1: only overdue tickets",
                            enum=["0", "1"],
                        ),
                        _query(
                            "undelivered",
                            "1: only tickets whose notices did not reach the reporter",
                            enum=["0", "1"],
                        ),
                    ],
                    "responses": {
                        "200": _json("TicketList", "The tickets"),
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/api/v1/tickets/{code}": {
                "get": {
                    "operationId": "showTicket",
                    "summary": "A ticket: details, photos, timeline, deliveries, allowed actions",
                    "parameters": [_code_parameter()],
                    "responses": {
                        "200": _json("TicketDetail", "The ticket"),
                        **_errors(400, 401, 403, 404),
                    },
                }
            },
            "/api/v1/tickets/{code}/actions": {
                "post": {
                    "operationId": "actOnTicket",
                    "summary": "One step of the procedure (claim, answer, transfer, …)",
                    "security": security,
                    "parameters": [_code_parameter()],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ActionBody")}},
                    },
                    "responses": {
                        "200": _json("TicketDetail", "The ticket after the step"),
                        **_errors(400, 401, 403, 404, 409, 413, 422),
                    },
                }
            },
            "/api/v1/media": {
                "post": {
                    "operationId": "uploadPhoto",
                    "summary": "Upload a photo (JPEG, PNG, WebP, HEIC) for an answer",
                    "security": security,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                            **{
                                kind: {"schema": {"type": "string", "format": "binary"}}
                                for kind in ("image/jpeg", "image/png", "image/webp")
                            },
                        },
                    },
                    "responses": {
                        "200": _json("StoredMedia", "Stored: refer to it by its sha256"),
                        **_errors(401, 403, 413, 415, 503),
                    },
                }
            },
            "/api/v1/stats": {
                "get": {
                    "operationId": "monthlyStats",
                    "summary": "The monthly statistics report, scoped to the caller",
                    "parameters": [
                        _query(
                            "month",
                            "yyyy-mm (default: the current period)",
                            pattern="^(2[0-9]{3}-(0[1-9]|1[0-2]))?$",
                        ),
                        _query(
                            "period",
                            "calendar month or the 25th cut",
                            enum=["month", "cut25", ""],
                        ),
                        _query("province", "2-digit province code", pattern="^([0-9]{2})?$"),
                        _query("ward", "5-digit ward code", pattern="^([0-9]{5})?$"),
                        _query(
                            "category",
                            "category code, e.g. dumping",
                            pattern="^[a-z_]{0,32}$",
                        ),
                    ],
                    "responses": {
                        "200": _json("Stats", "The report"),
                        **_errors(400, 401, 403, 404),
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }


async def openapi(request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json"""
    return web.json_response(document())


def mount_openapi(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi)
