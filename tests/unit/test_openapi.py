"""The OpenAPI description is closed, so that drift between it and the answers fails the
fuzzing test (tests/process/test_api.py): jobs carried effectiveConcurrency and shard,
which the Job schema lacked, and nothing noticed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import jsonschema

from orchestrator import config
from orchestrator.http.openapi import spec
from orchestrator.models import JobRecord

SPEC = spec(config.load("development", {}))


def objects(schema: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema inside `schema`, with where it is."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            yield where, schema
        for key, value in schema.items():
            yield from objects(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from objects(value, f"{where}[{i}]")


def test_every_object_in_the_description_is_closed() -> None:
    found = list(objects(SPEC, "spec"))
    assert len(found) > 10
    open_ = [where for where, schema in found if schema.get("additionalProperties") is not False]
    assert not open_, open_


def test_a_job_as_the_api_answers_it_matches_its_schema() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    job = JobRecord("j1", "q", "url", "qid", "completed", 3, 1, "w", 1, 2, now, now, now, now,
                    "drained", None, effective_concurrency=4, running=0, shard=1,
                    duplicates=2)  # fmt: skip
    schema = {**SPEC["components"]["schemas"]["Job"], "components": SPEC["components"]}
    jsonschema.validate(job.to_json(), schema)


def test_redrive_and_purge_take_no_body_and_the_patch_summary_names_every_field() -> None:
    paths = SPEC["paths"]
    for path in ("/api/queues/{name}/redrive", "/api/queues/{name}/dlq/purge"):
        assert paths[path]["post"]["requestBody"]["required"] is False
    patch = paths["/api/queues/{name}"]["patch"]
    fields = SPEC["components"]["schemas"]["QueuePatch"]["properties"]
    assert all(field in patch["summary"] for field in fields), patch["summary"]
