"""The OpenAPI description of the HTTP API, served at /openapi.json."""

from __future__ import annotations

import copy
from typing import Any

from orchestrator import __version__
from orchestrator.config import HANDLER_PATH, Settings
from orchestrator.models import JOB_STATES
from orchestrator.validate import (
    MAX_BATCH_SIZE,
    MAX_BATCH_WINDOW,
    MAX_PRIORITY,
    MAX_RATE_LIMIT,
    MIN_RATE_LIMIT,
)

_INT = {"type": "integer"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_NULL_INT = {"type": ["integer", "null"]}
_NULL_NUM = {"type": ["number", "null"]}
_IDS = {"type": "array", "items": {"type": "string"}}
_NULL_STR = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_NULL_TIME = {"type": ["string", "null"], "format": "date-time"}


def _object(properties: dict[str, Any], required: bool = True) -> dict[str, Any]:
    """A closed object: a field the description does not name is drift, and the fuzzing
    test (tests/process/test_api.py) fails on it."""
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": False}
    if required:
        schema["required"] = list(properties)
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


# fmt: off
_NAME = {"name": "name", "in": "path", "required": True, "schema": _STR}
_WRITE: list[dict[str, list[str]]] = [{"bearer": []}]

QUEUE: dict[str, Any] = {
        "name": _STR, "queueUrl": _STR, "concurrency": _INT, "handler": _STR, "paused": _BOOL,
        "processes": _INT, "batchSize": _INT, "batchWindow": {"type": "number"},
        "visible": _NULL_INT, "inFlight": _NULL_INT, "delayed": _NULL_INT,
        "worker": _NULL_STR, "jobId": _NULL_STR, "dlqName": _NULL_STR, "dlqUrl": _NULL_STR,
        "dlqVisible": _NULL_INT, "maxReceiveCount": _NULL_INT, "visibilityTimeout": _INT,
        "handled": _INT, "failed": _INT,
        "rateLimit": {"type": ["number", "null"]}, "priority": _INT, "adaptive": _BOOL,
        "maxShards": _INT, "shards": _INT, "effectiveConcurrency": _NULL_INT,
        "failureBodies": _BOOL,
        # Backlog age (§10): how long its visible messages have waited for a consumer (0
        # while served), and how late its consumers' oldest recent arrival was (null:
        # not running).
        "waitSeconds": {"type": "number"}, "oldestAgeSeconds": _NULL_NUM,
        "depthChangedAt": {"type": ["string", "null"], "format": "date-time"},
        # Where it lives (region null: AWS_REGION; documents from before regions), and
        # whether the product owns it in SQS (false: adopted) or found it missing there.
        "managed": _BOOL, "region": _NULL_STR, "account": _NULL_STR, "roleArn": _NULL_STR,
        "missing": {"type": ["boolean", "null"]},
}

SCHEMAS: dict[str, Any] = {
    "Queue": _object(QUEUE),
    "QueuePatch": {
        **_object({"concurrency": {"type": "integer", "minimum": 1}, "paused": _BOOL,
                   "handler": {"type": "string", "pattern": f"^{HANDLER_PATH.pattern}$"},
                   "processes": {"type": "integer", "minimum": 1},
                   "batchSize": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_SIZE},
                   "batchWindow": {"type": "number", "minimum": 0,
                                   "maximum": MAX_BATCH_WINDOW},
                   "rateLimit": {"type": ["number", "null"], "minimum": MIN_RATE_LIMIT,
                                 "maximum": MAX_RATE_LIMIT},
                   "priority": {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY},
                   "adaptive": _BOOL,
                   "maxShards": {"type": "integer", "minimum": 1},
                   "failureBodies": _BOOL},
                  required=False),
        "additionalProperties": False,
        "minProperties": 1,
    },
    # A PATCH's answer: the queue, and why a handler given may not import (a warning:
    # the API's host may not carry the application's code; the workers' must).
    "QueueChanged": _object({**QUEUE, "warnings": {"type": "array", "items": _STR}}),
    "FleetNeed": _object({"liveWorkers": _INT, "capacity": _INT, "wanted": _INT,
                          "desiredWorkers": {"type": "integer", "minimum": 1},
                          "updatedAt": {"type": ["string", "null"], "format": "date-time"},
                          "largestWaitSeconds": {"type": "number", "minimum": 0}}),
    "Redrive": _object({"name": _STR, "moved": _INT, "notFound": _IDS}),
    "DlqPurge": _object({"name": _STR, "deleted": _NULL_INT, "notFound": _IDS}),
    "Ids": {**_object({"ids": {"type": "array", "minItems": 1, "items": {
        "type": "string", "pattern": "^[A-Za-z0-9-]{1,100}$"}}}, required=False),
        "additionalProperties": False},
    # An adopted queue's DLQ messages are its team's: their purge needs yesReally (409).
    "PurgeIds": {**_object({"ids": {"type": "array", "minItems": 1, "items": {
        "type": "string", "pattern": "^[A-Za-z0-9-]{1,100}$"}}, "yesReally": _BOOL},
        required=False), "additionalProperties": False},
    "DeadLetter": _object({
        "messageId": _STR, "body": _STR, "bodyTruncated": _BOOL, "receiveCount": _INT,
        "group": _NULL_STR,
        "lastFailure": {"oneOf": [{"type": "null"}, _object({
            "messageId": _STR, "receiveCount": _INT, "errorType": _STR, "error": _STR,
            "traceback": _STR, "at": _TIME, "body": _NULL_STR})]},
    }),
    "Consumer": _object({"pid": _INT, "queueName": _NULL_STR, "rssMb": {"type": "number"},
                         "cpuPercent": {"type": "number"}}),
    "Worker": _object({
        "id": _STR, "host": _STR, "pid": _INT, "status": {"enum": ["active", "draining"]},
        "load": _INT, "maxLoad": _INT, "startedAt": _TIME,
        "heartbeatAgeSeconds": {"type": "number"},
        "consumers": {"type": "array", "items": _ref("Consumer")},
        "late": _BOOL, "gone": _BOOL,
    }),
    "Job": _object({
        "id": _STR, "queueName": _STR, "queueUrl": _STR, "status": {"enum": list(JOB_STATES)},
        "messageCount": _INT, "failedCount": _INT,
        "processor": _object({"workerId": _NULL_STR, "workerPid": _NULL_INT,
                              "consumerPid": _NULL_INT}),
        "createdAt": _TIME, "startedAt": _NULL_TIME, "endedAt": _NULL_TIME,
        "lastModified": _TIME, "endReason": _NULL_STR, "error": _NULL_STR,
        "processes": {"type": "array", "items": _object({
            "pid": _INT, "handled": _INT, "failed": _INT, "exit": _NULL_STR})},
        "effectiveConcurrency": _NULL_INT, "shard": _INT, "duplicates": _INT,
        "oldestAgeSeconds": _NULL_NUM,
    }),
    "Health": _object({"status": {"enum": ["ok", "stalled"]}, "leader": _BOOL,
                       "masterId": _STR, "mongodb": _BOOL,
                       "sqs": {"type": ["boolean", "null"]},
                       "lastCycleSecondsAgo": {"type": "number"}}),
    "Error": _object({"status": _INT, "error": _STR, "message": _STR}),
}

ERRORS = {
    400: "Malformed request: bad JSON, unknown field, wrong type or bad query parameter",
    401: "A write or a DLQ look without the API token (when API_TOKEN is set)",
    403: "A request addressed to another host name, or a write or DLQ look from another "
         "site's page",
    404: "No such queue, job or path",
    405: "The path exists, not with this method",
    409: "A conflict: a DLQ operation on a queue without a DLQ, or while another DLQ "
         "operation runs on that queue anywhere in the fleet",
    413: "A body over 64 KiB",
    415: "A write whose body is not application/json",
    422: "A value the CLI would refuse too (e.g. concurrency above MAX_CONCURRENCY)",
    503: "MongoDB or SQS cannot be reached",
}

PATHS: dict[str, Any] = {
    "/health": {"get": {"summary": "Liveness, and whether this master leads",
                        "responses": {"200": _json(_ref("Health")),
                                      "503": _json(_ref("Health"), "The master's loop is stuck")}}},
    "/metrics": {"get": {"summary": "Prometheus metrics of the whole fleet",
                         "responses": {"200": {"description": "Prometheus text format",
                                               "content": {"text/plain": {"schema": _STR}}}}}},
    "/openapi.json": {"get": {"summary": "This description",
                              "responses": {"200": _json({"type": "object"})}}},
    "/": {"get": {"summary": "The dashboard",
                  "responses": {"200": {"description": "HTML page",
                                        "content": {"text/html": {"schema": _STR}}}}}},
    "/static/dashboard.css": {"get": {
        "summary": "The dashboard's styles",
        "responses": {"200": {"description": "CSS", "content": {"text/css": {"schema": _STR}}}},
    }},
    "/static/dashboard.js": {"get": {
        "summary": "The dashboard's script",
        "responses": {"200": {"description": "JavaScript",
                              "content": {"text/javascript": {"schema": _STR}}}},
    }},
    "/api/queues": {"get": {
        "summary": "Managed queues by name, a page at a time, with their depth (the leading "
                   "master's last check), assignment and message counts",
        "parameters": [
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 1000}},
            {"name": "after", "in": "query", "schema": _STR,
             "description": "the last name of the previous page"},
        ],
        "responses": {"200": _json({"type": "array", "items": _ref("Queue")}),
                      **_errors(400, 503)},
    }},
    "/api/queues/{name}": {
        "parameters": [_NAME],
        "get": {"summary": "One queue", "responses": {"200": _json(_ref("Queue")),
                                                      **_errors(404, 503)}},
        "patch": {
            "summary": "Change any of concurrency, paused, handler, processes, batchSize, "
                       "batchWindow, rateLimit (null: none), priority, adaptive, maxShards, "
                       "failureBodies "
                       "(validated together, as by the CLI; all or nothing)",
            "security": _WRITE,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("QueuePatch")}}},
            "responses": {"200": _json(_ref("QueueChanged")), **_errors(400, 401, 403, 404, 413,
                                                                   415, 422, 503)},
        },
    },
    "/api/queues/{name}/redrive": {
        "parameters": [_NAME],
        "post": {
            "summary": "Move the queue's DLQ messages (all, or those of `ids`) back to it",
            "security": _WRITE,
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": _ref("Ids")}}},
            "responses": {"200": _json(_ref("Redrive")), **_errors(400, 401, 403, 404, 409, 413,
                                                                       415, 422, 503)},
        },
    },
    "/api/queues/{name}/dlq": {
        "parameters": [_NAME],
        "get": {
            "summary": "Messages in the queue's DLQ with the last failure of each (reading "
                       "one is a receive: its receive count goes up by one, so a look needs "
                       "the token like a write)",
            "security": _WRITE,
            "parameters": [{"name": "limit", "in": "query", "schema": {
                "type": "integer", "minimum": 1, "maximum": 1000, "default": 50}}],
            "responses": {"200": _json({"type": "array", "items": _ref("DeadLetter")}),
                          **_errors(400, 401, 403, 404, 409, 503)},
        },
    },
    "/api/queues/{name}/dlq/purge": {
        "parameters": [_NAME],
        "post": {
            "summary": "Delete the queue's DLQ messages (all, or those of `ids`)",
            "security": _WRITE,
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": _ref("PurgeIds")}}},
            "responses": {"200": _json(_ref("DlqPurge")),
                          **_errors(400, 401, 403, 404, 409, 413, 415, 422, 503)},
        },
    },
    "/api/series": {"get": {
        "summary": "The last hour, minute by minute, of queues (handled, failed, depth) and "
                   "workers (load)",
        "parameters": [{"name": "queue", "in": "query", "schema": _STR},
                       {"name": "worker", "in": "query", "schema": _STR}],
        "responses": {"200": _json({"type": "object"}), **_errors(400, 503)},
    }},
    "/api/fleet": {"get": {
        "summary": "What the fleet needs, by the leading master's last cycle, for autoscalers: "
                   "live workers, their capacity (assignments), the assignments wanted (running "
                   "plus queues and shards waiting for room) and ceil(wanted / MAX_LOAD), at "
                   "least 1 (updatedAt null: no leader has written it yet)",
        "responses": {"200": _json(_ref("FleetNeed")), **_errors(503)},
    }},
    "/api/workers": {"get": {
        "summary": "Workers with their load, consumers and heartbeat age",
        "responses": {"200": _json({"type": "array", "items": _ref("Worker")}), **_errors(503)},
    }},
    "/api/jobs": {"get": {
        "summary": "Jobs, newest first",
        "parameters": [
            {"name": "status", "in": "query", "schema": {"enum": list(JOB_STATES)}},
            {"name": "queue", "in": "query", "schema": _STR},
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
        ],
        "responses": {"200": _json({"type": "array", "items": _ref("Job")}), **_errors(400, 503)},
    }},
    "/api/jobs/{id}": {
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": _STR}],
        "get": {"summary": "One job", "responses": {"200": _json(_ref("Job")),
                                                    **_errors(404, 503)}},
    },
}

# fmt: on


def spec(settings: Settings) -> dict[str, Any]:
    """The description for these settings: their concurrency limit, and whether writes
    and DLQ looks need the token."""
    paths = copy.deepcopy(PATHS)
    schemas = copy.deepcopy(SCHEMAS)
    schemas["QueuePatch"]["properties"]["concurrency"]["maximum"] = settings.max_concurrency
    schemas["QueuePatch"]["properties"]["processes"]["maximum"] = settings.max_processes
    schemas["QueuePatch"]["properties"]["maxShards"]["maximum"] = settings.max_shards
    for item in paths.values():
        for operation in item.values():
            if isinstance(operation, dict) and "security" in operation and not settings.api_token:
                del operation["security"]
    return {
        "openapi": "3.1.0",
        "info": {"title": "orchestrator", "version": __version__,
                 "description": "Queues, workers and jobs of an orchestrator fleet. Reads are "
                                "open; writes and DLQ looks (which receive messages) need "
                                "a bearer token when API_TOKEN is set."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {f"E{code}": _json(_ref("Error"), text) for code, text in ERRORS.items()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
