"""The schema version in `meta`: recorded at start, never lowered, a newer one refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from click.testing import Result

from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import SCHEMA_VERSION, Store
from orchestrator.config import Endpoints, Settings
from orchestrator.errors import SchemaTooNew

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def bare(settings: Settings, endpoints: Endpoints) -> Iterator[Store]:
    """A Store on this test's database before anything ran ensure_indexes on it."""
    store = Store(endpoints.mongodb_uri, settings.mongodb_name, job_ttl_days=1)
    yield store
    store.close()


def schema_doc(store: Store) -> dict[str, object] | None:
    return store._db["meta"].find_one({"_id": "schema"})


def test_a_fresh_database_gets_the_current_version(bare: Store) -> None:
    assert SCHEMA_VERSION == 1
    assert bare.schema_version() is None
    bare.ensure_indexes()
    assert schema_doc(bare) == {"_id": "schema", "version": 1}
    bare.ensure_indexes()  # every start: the insert that finds it there is harmless
    assert schema_doc(bare) == {"_id": "schema", "version": 1}


def test_a_newer_schema_is_refused_before_anything_is_written(bare: Store) -> None:
    bare._db["meta"].insert_one({"_id": "schema", "version": 99})
    with pytest.raises(SchemaTooNew) as info:
        bare.ensure_indexes()
    assert info.value.exit_code == 2
    assert str(info.value) == (
        f"the database '{bare._db.name}' has schema version 99; this orchestrator 0.1.0 "
        "understands up to 1: upgrade orchestrator first (see docs/mongodb.md, 'Upgrades')"
    )
    assert bare._db.list_collection_names() == ["meta"]  # no index, no collection made
    assert schema_doc(bare) == {"_id": "schema", "version": 99}


def test_an_older_schema_is_raised_and_a_newer_one_never_lowered(bare: Store) -> None:
    bare._db["meta"].insert_one({"_id": "schema", "version": 0})
    bare.ensure_indexes()
    assert bare.schema_version() == 1
    # A newer orchestrator raised it between our check and our write: ours must not win.
    bare._db["meta"].update_one({"_id": "schema"}, {"$set": {"version": 5}})
    bare.record_schema(0)
    assert bare.schema_version() == 5
    with pytest.raises(SchemaTooNew):  # nor does an insert that finds it there
        bare.record_schema(None)
    assert bare.schema_version() == 5


def test_a_cli_command_refuses_a_newer_schema_and_writes_nothing(
    run_cli: Callable[..., Result], bare: Store, sqs: Sqs
) -> None:
    bare._db["meta"].insert_one({"_id": "schema", "version": 99})
    result = run_cli("queue", "create", "q1", "--concurrency", "2")
    assert result.exit_code == 2, result.output
    assert "has schema version 99" in result.stderr and "understands up to 1" in result.stderr
    assert "Traceback" not in result.output
    assert bare._db.list_collection_names() == ["meta"]
    assert sqs.list_queue_urls() == []
