"""`queue apply` and `queue export` against real servers: created and adopted queues."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.cli.main import cli
from orchestrator.config import Endpoints
from tests.integration.test_adopt import ROLE, as_role, client, team_queue
from tests.integration.test_cli_queue import snapshot

Run = Callable[..., Result]
FILE = """\
queues:
  - name: orders
    create:
      visibilityTimeout: 60
      dlq: true
      maxReceiveCount: 4
    handler: orchestrator.handlers:noop
    concurrency: 8
  - name: events.fifo
    create: true
    rateLimit: 50
    priority: 3
"""


def write(tmp_path: Path, text: str, name: str = "queues.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_file_with_three_errors_reports_all_and_changes_nothing(
    run_cli: Run, store: Store, sqs: Sqs, tmp_path: Path
) -> None:
    path = write(tmp_path, FILE.replace("concurrency: 8", "concurrency: eight")
                 .replace("priority: 3", "priority: 30")
                 .replace("create: true", "create: true\n    region: eu-west-1"))  # fmt: skip
    # Servers nobody answers at: the file is checked before any connection is made.
    dead = {"MONGODB_URI": "mongodb://127.0.0.1:9/", "AWS_SQS_ENDPOINT": "http://127.0.0.1:9"}
    assert run_cli("queue", "apply", path, env=dead).stderr == run_cli("queue", "apply",
                                                                       path).stderr  # fmt: skip
    result = run_cli("queue", "apply", path)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"{path}:8: concurrency must be an integer, not 'eight'",
        f"{path}:11: region is for adopted queues; a created queue lives in AWS_REGION, "
        "under the own credentials",
        f"{path}:13: priority 30 is out of range 0..9",
        f"Error: 3 problems in {path}; nothing was changed",
    ]
    assert result.stdout == ""
    assert snapshot(store, sqs) == {"docs": [], "sqs": {}}


def test_apply_creates_and_applying_again_changes_nothing(
    run_cli: Run, store: Store, sqs: Sqs, tmp_path: Path
) -> None:
    path = write(tmp_path, FILE)
    first = run_cli("queue", "apply", path)
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        "+ create orders with visibilityTimeout: 60, dlq: true, maxReceiveCount: 4, "
        "concurrency: 8, handler: orchestrator.handlers:noop",
        "+ create events.fifo with visibilityTimeout: 30, dlq: false, rateLimit: 50, priority: 3",
        "Applied: 2 created, 0 adopted, 0 updated, 0 removed.",
    ]
    orders = store.get_queue("orders")
    assert (orders.visibility_timeout, orders.dlq_name, orders.max_receive_count,
            orders.concurrency) == (60, "orders-dlq", 4, 8)  # fmt: skip
    events = store.get_queue("events.fifo")
    assert (events.rate_limit, events.priority, events.fifo) == (50.0, 3, True)
    assert len(sqs.list_queue_urls()) == 3
    before = snapshot(store, sqs)
    again = run_cli("queue", "apply", path)
    assert again.exit_code == 0, again.output
    assert again.stdout == f"No changes: 2 queues match {path}.\n"
    assert snapshot(store, sqs) == before


def test_apply_updates_only_what_differs_and_leaves_omitted_fields(
    run_cli: Run, store: Store, tmp_path: Path
) -> None:
    assert run_cli("queue", "apply", write(tmp_path, FILE)).exit_code == 0
    assert run_cli("queue", "set", "orders", "--priority", "2").exit_code == 0
    changed = FILE.replace("concurrency: 8", "concurrency: 6")
    result = run_cli("queue", "apply", write(tmp_path, changed))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "~ update orders concurrency: 8 → 6",
        "Applied: 0 created, 0 adopted, 1 updated, 0 removed.",
    ]
    orders = store.get_queue("orders")
    assert (orders.concurrency, orders.priority) == (6, 2)  # priority: not in the file


def test_what_cannot_change_in_place_exits_2_and_changes_nothing(
    run_cli: Run, store: Store, sqs: Sqs, tmp_path: Path
) -> None:
    assert run_cli("queue", "apply", write(tmp_path, FILE)).exit_code == 0
    before = snapshot(store, sqs)
    path = write(tmp_path, FILE.replace("visibilityTimeout: 60", "visibilityTimeout: 90")
                 .replace("concurrency: 8", "concurrency: 2"))  # fmt: skip
    result = run_cli("queue", "apply", path)
    assert result.exit_code == 2, result.output
    assert f"{path}:3: queue 'orders': create.visibilityTimeout 60 → 90 cannot change in " \
           "place" in result.stderr  # fmt: skip
    assert snapshot(store, sqs) == before


def test_export_then_apply_from_stdin_is_no_change(
    run_cli: Run, environ: dict[str, str], tmp_path: Path
) -> None:
    assert run_cli("queue", "apply", write(tmp_path, FILE)).exit_code == 0
    assert run_cli("queue", "set", "orders", "--batch-size", "10", "--batch-window", "0.5",
                   "--rate-limit", "2.5", "--adaptive").exit_code == 0  # fmt: skip
    exported = run_cli("queue", "export")
    assert exported.exit_code == 0, exported.output
    assert "batchWindow: 0.5" in exported.stdout
    result = CliRunner().invoke(cli, ["queue", "apply", "-", "--dry-run"], env=environ,
                                input=exported.stdout, catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "No changes: 2 queues match <stdin>.\n"
    one = run_cli("queue", "export", "events.fifo")
    assert one.exit_code == 0 and "name: orders" not in one.stdout
    missing = run_cli("queue", "export", "orders", "ghost")
    assert missing.exit_code == 1
    assert "queue 'ghost' does not exist" in missing.stderr


def test_prune_removes_only_what_the_file_lacks(
    run_cli: Run, store: Store, sqs: Sqs, tmp_path: Path
) -> None:
    assert run_cli("queue", "apply", write(tmp_path, FILE)).exit_code == 0
    assert run_cli("queue", "create", "extra", "--dlq").exit_code == 0
    path = write(tmp_path, FILE)
    kept = run_cli("queue", "apply", path)
    assert kept.stdout == f"No changes: 2 queues match {path}.\n"
    pruned = run_cli("queue", "apply", path, "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.stdout.splitlines() == [
        "- remove extra (managed: deleted in SQS with its DLQ extra-dlq)",
        "Applied: 0 created, 0 adopted, 0 updated, 1 removed.",
    ]
    assert [q.name for q in store.list_queues()] == ["events.fifo", "orders"]
    assert not [u for u in sqs.list_queue_urls() if "extra" in u]


def test_dry_run_changes_nothing(run_cli: Run, store: Store, sqs: Sqs, tmp_path: Path) -> None:
    assert run_cli("queue", "create", "extra").exit_code == 0
    before = snapshot(store, sqs)
    result = run_cli("queue", "apply", write(tmp_path, FILE), "--prune", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-2:] == [
        "- remove extra (managed: deleted in SQS)",
        "Dry run: nothing was changed.",
    ]
    assert result.stdout.count("+ create") == 2
    assert snapshot(store, sqs) == before


def test_adopted_queues_of_other_regions_and_accounts_apply_export_and_prune(
    run_cli: Run, store: Store, environ: dict[str, str], endpoints: Endpoints, tmp_path: Path
) -> None:
    eu_url = team_queue(client(endpoints, region="eu-west-1"), "payments", dlq=False)
    theirs = as_role(endpoints)
    their_url = team_queue(theirs, "billing")
    path = write(tmp_path, FILE + f"""\
  - name: payments-eu
    adopt: {eu_url}
    region: eu-west-1
    handler: orchestrator.handlers:noop
  - name: billing
    adopt: arn:aws:sqs:us-east-1:111111111111:billing
    roleArn: {ROLE}
    concurrency: 2
""")
    applied = run_cli("queue", "apply", path)
    assert applied.exit_code == 0, applied.output
    assert f"+ adopt payments-eu ({eu_url})" in applied.stdout
    assert applied.stdout.splitlines()[-1] == "Applied: 2 created, 2 adopted, 0 updated, 0 removed."
    billing = store.get_queue("billing")
    assert (billing.queue_url, billing.managed, billing.role_arn) == (their_url, False, ROLE)
    assert run_cli("queue", "apply", path).stdout == f"No changes: 4 queues match {path}.\n"

    exported = run_cli("queue", "export")
    assert f"adopt: {eu_url}" in exported.stdout and f"roleArn: {ROLE}" in exported.stdout
    again = CliRunner().invoke(cli, ["queue", "apply", "-", "--dry-run"], env=environ,
                               input=exported.stdout, catch_exceptions=False)  # fmt: skip
    assert again.stdout == "No changes: 4 queues match <stdin>.\n", again.output

    # Pruned from the file: an adopted queue is forgotten, never deleted in SQS.
    pruned = run_cli("queue", "apply", write(tmp_path, FILE, "two.yaml"), "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert sorted(q.name for q in store.list_queues()) == ["events.fifo", "orders"]
    assert theirs.get_queue_url(QueueName="billing")["QueueUrl"] == their_url
    assert theirs.get_queue_url(QueueName="billing-dead")["QueueUrl"]
    assert client(endpoints, region="eu-west-1").get_queue_url(QueueName="payments")
