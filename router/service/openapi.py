"""``GET /openapi.json``: an OpenAPI 3.1 description of the service's routes.

Schemas come from the pydantic models and dataclasses the handlers use, so the description
cannot drift from the validation. ``POST /v1/chat/completions`` is described by the subset of
the OpenAI schema diffroute validates (other OpenAI fields pass through); OpenAI documents the
rest. A test validates the document and fuzzes every route in it (no 5xx).
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

import router
from router.pairing.decision import Decision
from router.pairing.pinned import Pairings
from router.service.schema import ChatRequest, DiffrouteOptions, ReportBody, RouteBody

_REF = "#/components/schemas/{model}"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json)


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def _schemas() -> dict[str, Any]:
    """Component schemas; nested definitions are hoisted next to them."""
    out: dict[str, Any] = {}
    types: dict[str, Any] = {"RouteRequest": RouteBody, "Decision": Decision,
                             "Pairings": Pairings, "DiffrouteOptions": DiffrouteOptions,
                             "ChatRequest": ChatRequest, "Report": ReportBody}
    for name, tp in types.items():
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            schema = tp.model_json_schema(ref_template=_REF)
        else:
            schema = TypeAdapter(tp).json_schema(ref_template=_REF)
        out.update(schema.pop("$defs", {}))
        out[name] = schema
    out["RoutedDecision"] = {"allOf": [
        {"$ref": _REF.format(model="Decision")},
        {"type": "object", "required": ["decision_id", "expires_in_s"], "properties": {
            "decision_id": {"type": "string", "description": "report the pair's answers "
                            "with it (POST /v1/diffs), once, within expires_in_s; kept in "
                            "this instance's memory only"},
            "expires_in_s": {"type": "number"}}}]}
    number = {"type": ["number", "null"]}
    out["ReportResult"] = {
        "type": "object",
        "required": ["object", "decision_id", "role", "primary", "partner", "mode", "domains",
                     "live_diff_id", "agreement", "flagged", "method", "divergence",
                     "threshold", "diff"],
        "properties": {
            "object": {"const": "diffroute.report"}, "decision_id": {"type": "string"},
            "role": {"enum": ["audit", "assist"]}, "primary": {"type": "string"},
            "partner": {"type": "string"}, "mode": {"const": "reported"},
            "domains": {"type": "array", "items": {"type": "string"}},
            "live_diff_id": {"type": ["string", "null"],
                             "description": "set when flagged (the stored live diff)"},
            "agreement": number, "flagged": {"type": "boolean"},
            "method": {"type": ["string", "null"],
                       "description": "tool_calls, json, semantic, typed:<type> or jaccard"},
            "divergence": number, "threshold": number,
            "diff": {"type": ["string", "null"], "description": "one '# ' line per difference "
                     "(primary → partner), then a unified diff"},
            "live_diff_error": {"type": "string", "description": "why the live diff of a "
                                "flagged comparison was not confirmed stored"}}}
    out["Error"] = {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["message", "type"],
                                 "properties": {"message": {"type": "string"},
                                                "type": {"type": "string"},
                                                "param": {"type": ["string", "null"]},
                                                "code": {"type": ["string", "null"]}}}}}
    return out


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": _REF.format(model=ref)}}}}


def _errors(*codes: int) -> dict[str, Any]:
    # every route may answer 403: a Host the service does not answer to (host_not_allowed),
    # a browser page of another origin (cross_origin_request)
    return {str(c): {"description": "error (OpenAI envelope)", **_json("Error")}
            for c in sorted({*codes, 403})}


def _query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


DIFF_FILTERS = [
    _query("pair", {"type": "string"}), _query("primary", {"type": "string"}),
    _query("partner", {"type": "string"}), _query("role", {"enum": ["audit", "assist"]}),
    _query("domain", {"type": "string"}), _query("since", {"type": "string"}),
    _query("until", {"type": "string"}), _query("cursor", {"type": "string"}),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
]


def _live_paths(free: dict[str, Any]) -> dict[str, Any]:
    listing = {"application/json": {"schema": free}}
    return {
        "/v1/diffs": {
            "get": {
                "summary": "Live diffs, oldest first (order=desc: newest first), in pages "
                           "(next_cursor)",
                "parameters": [*DIFF_FILTERS, _query("order", {"enum": ["asc", "desc"],
                                                               "default": "asc"})],
                "responses": {"200": {"description": "a page", "content": listing},
                              **_errors(400, 401, 503)}},
            "post": {
                "summary": "Report the two answers of a routed pair the framework called "
                           "itself: compared and recorded like a paired call (mode "
                           "'reported')",
                "requestBody": {"required": True, **_json("Report")},
                "responses": {"200": {"description": "the comparison",
                                      **_json("ReportResult")},
                              **_errors(400, 401, 404, 413)}}},
        "/v1/diffs/stream": {"get": {
            "summary": "Live diffs as server-sent events, resumable with Last-Event-ID",
            "parameters": [*DIFF_FILTERS,
                           _query("heartbeat", {"type": "number", "minimum": 0.05,
                                                "maximum": 300}),
                           {"name": "Last-Event-ID", "in": "header", "required": False,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "an event stream", "content": {
                "text/event-stream": {"schema": {"type": "string"}}}},
                **_errors(400, 401, 503)}}},
        "/v1/stats/disagreements": {"get": {
            "summary": "Disagreement rate per pair and domain, with Wilson intervals",
            "parameters": [_query("window", {"type": "number", "minimum": 1})],
            "responses": {"200": {"description": "rates", "content": listing},
                          **_errors(400, 401, 503)}}},
        "/v1/drift": {"get": {
            "summary": "Drift alarms and every pair's drift state",
            "parameters": [_query("limit", {"type": "integer", "minimum": 1,
                                            "maximum": 1000})],
            "responses": {"200": {"description": "drift", "content": listing},
                          **_errors(400, 401, 503)}}},
        "/metrics": {"get": {
            "summary": "Prometheus exposition",
            "responses": {"200": {"description": "metrics", "content": {
                "text/plain": {"schema": {"type": "string"}}}}, **_errors(401)}}},
    }


def _paths() -> dict[str, Any]:
    free = {"type": "object", "additionalProperties": True}
    return {
        "/v1/chat/completions": {"post": {
            "summary": "OpenAI chat completions: a pool model, or audit:/assist: a pair",
            "requestBody": {"required": True, **_json("ChatRequest")},
            "responses": {"200": {"description": "a chat.completion (or an SSE stream)",
                                  "content": {"application/json": {"schema": free},
                                              "text/event-stream": {
                                                  "schema": {"type": "string"}}}},
                          **_errors(400, 401, 404, 409, 413, 429, 502, 503, 504)}}},
        "/v1/models": {"get": {
            "summary": "Pool models, then the virtual audit:/assist: models",
            "responses": {"200": {"description": "an OpenAI model list",
                                  "content": {"application/json": {"schema": free}}},
                          **_errors(401)}}},
        "/v1/models/{model}": {"get": {
            "summary": "One model of the list: a pool model or a virtual audit:/assist: one",
            "parameters": [{"name": "model", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "an OpenAI model object",
                                  "content": {"application/json": {"schema": free}}},
                          **_errors(401, 404)}}},
        **_live_paths(free),
        "/v1/route": {"post": {
            "summary": "Choose a pair for a task without calling any model",
            "requestBody": {"required": True, **_json("RouteRequest")},
            "responses": {"200": {"description": "the decision and its id",
                                  **_json("RoutedDecision")},
                          **_errors(400, 401, 404, 409, 413)}}},
        "/v1/pairings": {
            "get": {"summary": "Configured pinned partners and exclusions",
                    "responses": {"200": {"description": "pairings", **_json("Pairings")},
                                  **_errors(401)}},
            "put": {"summary": "Replace the pairings (admin key); persisted in the data dir",
                    "security": [{"adminKey": []}],
                    "requestBody": {"required": True, **_json("Pairings")},
                    "responses": {"200": {"description": "the stored pairings",
                                          **_json("Pairings")},
                                  **_errors(400, 401, 403, 413, 503)}}},
        "/v1/profiles/diff": {"get": {
            "summary": "The behavioral diff of two models (format=html: the HTML report)",
            "parameters": [*({"name": n, "in": "query", "required": True,
                              "schema": {"type": "string"}} for n in ("a", "b")),
                           {"name": "format", "in": "query", "required": False,
                            "schema": {"enum": ["json", "html"], "default": "json"}}],
            "responses": {"200": {"description": "the diff", "content": {
                "application/json": {"schema": free}, "text/html": {"schema": {
                    "type": "string"}}}}, **_errors(400, 401, 404, 503)}}},
        **_dashboard_paths(free),
        "/healthz": {"get": {
            "summary": "Liveness and pool readiness (?probe=ready: 503 when not ready)",
            "security": [],
            "parameters": [{"name": "probe", "in": "query", "required": False,
                            "schema": {"enum": ["ready"]}}],
            "responses": {"200": {"description": "alive", "content": {
                "application/json": {"schema": free}}},
                **_errors(400),
                "503": {"description": "not ready (with ?probe=ready)"}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    }


def _dashboard_paths(free: dict[str, Any]) -> dict[str, Any]:
    """The routes the dashboard reads (``router.service.ui.views``); any client may."""
    def number(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description,
                "schema": {"type": "number"}}

    def ok(description: str) -> dict[str, Any]:
        return {"200": {"description": description,
                        "content": {"application/json": {"schema": free}}}}

    return {
        "/v1/pool": {"get": {
            "summary": "Every model (family, backend, status, profile summary) and the pool's "
                       "pairwise similarity per domain (κp with its interval, agreement, error "
                       "consistency, accuracy), families and detected communities",
            "responses": {**ok("the pool"), **_errors(401, 404, 503)}}},
        "/v1/pairings/current": {"get": {
            "summary": "The policy's current choice for every primary and role, with score, "
                       "reason and pin",
            "responses": {**ok("one row per primary and role"), **_errors(401)}}},
        "/v1/stats/disagreements/series": {"get": {
            "summary": "Disagreement rate per pair and domain over time: buckets with a Wilson "
                       "interval, and the rate the profile predicts",
            "parameters": [number("window", "seconds back from now (default 3600)"),
                           number("buckets", "how many (1–500, default 30)")],
            "responses": {**ok("the series"), **_errors(400, 401, 503)}}},
    }


def _with_method_not_allowed(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation answers 405 to a method its path does not serve (with ``Allow``)."""
    for operations in paths.values():
        for operation in operations.values():
            operation["responses"].setdefault("405", {
                "description": "a method this path does not serve (the Allow header lists "
                               "those it does)", **_json("Error")})
    return paths


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once per process, on first use)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "diffroute", "version": router.__version__,
                 "description": "Routing, pairings and profile routes of diffroute. "
                                "POST /v1/chat/completions and GET /v1/models follow the "
                                "OpenAI API; paired calls add a `diffroute` object."},
        "paths": _with_method_not_allowed(_paths()),
        "components": {"schemas": _schemas(), "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer"},
            "adminKey": {"type": "http", "scheme": "bearer"}}},
        "security": [{"apiKey": []}],
    }
