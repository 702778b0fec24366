"""LocalStack through the launcher; needs `orchestrator services install-localstack` first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.backends.sqs import Sqs
from orchestrator.embedded import localstack
from orchestrator.embedded import servers as embedded
from tests.conftest import base_environ

# Where `orchestrator services install-localstack` puts it with the default settings.
INSTALLED = config.default_data_dir(os.environ) / "localstack"


@pytest.mark.timeout(180)
@pytest.mark.skipif(
    not localstack.localstack_python(INSTALLED.parent).exists(),
    reason="LocalStack is not installed: run `orchestrator services install-localstack`",
)
def test_localstack_starts_serves_sqs_and_stops(tmp_path: Path) -> None:
    (tmp_path / "localstack").symlink_to(INSTALLED)
    environ = base_environ(tmp_path, AWS_SQS_ENDPOINT="localstack", MONGODB_URI="mongodb://x:1/")
    settings = config.load(environ=environ)
    try:
        ends = embedded.ensure(settings)
        assert embedded.status(settings)["sqs"]["running"] is True
        sqs = Sqs(ends.sqs_endpoint, settings.aws_region, "test", "test")
        url, dlq_url = sqs.create_queue("ls", visibility_timeout=30, dlq_name="ls-dlq")
        assert dlq_url
        sqs.send_batch(dlq_url, [str(i) for i in range(10)])
        assert len(sqs.redrive(dlq_url, url, 100)) == 10
        assert sqs.depth(url).visible == 10
    finally:
        assert embedded.stop(settings) == ["sqs"]
