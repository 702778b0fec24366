"""Where a queue lives: its SQS name, account and region, read from a URL or an ARN.

Pure parsing (no network): `queue adopt` and `queue apply` check what they are given
before any call, and the file check reports every bad reference at once.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from orchestrator import validate
from orchestrator.config import AWS_REGION
from orchestrator.errors import InvalidValue

_ACCOUNT = re.compile(r"[0-9]{12}")
_REGION = AWS_REGION.pattern.replace("(", "(?:")  # no groups of its own
# sqs.eu-west-1.amazonaws.com, eu-west-1.queue.amazonaws.com (legacy),
# sqs.us-east-1.localhost.localstack.cloud; queue.amazonaws.com alone is us-east-1.
_HOST_REGION = re.compile(rf"(?:^|\.)sqs\.({_REGION})\.|^({_REGION})\.queue\.")
_ARN = re.compile(rf"arn:aws[a-z-]*:sqs:({_REGION}):([0-9]{{12}}):([^:/]+)")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}")


@dataclass(frozen=True)
class QueueRef:
    """An existing queue, as `adopt` was told of it."""

    name: str  # its name in SQS
    account: str
    region: str
    url: str | None  # None when given by ARN: GetQueueUrl finds it

    @property
    def arn(self) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{self.name}"


def parse(ref: str, default_region: str, region: str | None = None) -> QueueRef:
    """The queue a URL or ARN names. `region`: where the URL names none (local servers'
    URLs do not); given beside a URL or ARN that names another, it is refused."""
    if region is not None:
        check_region(region)
    ref = ref.strip()
    if ref.startswith("arn:"):
        return _from_arn(ref, region)
    if ref.startswith(("https://", "http://")):
        return _from_url(ref, region or default_region, region is not None)
    raise InvalidValue(
        f"{ref!r} is neither a queue URL (https://sqs.REGION.amazonaws.com/"
        "ACCOUNT/NAME) nor a queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)"
    )


def _from_arn(ref: str, region: str | None) -> QueueRef:
    match = _ARN.fullmatch(ref)
    if not match:
        raise InvalidValue(f"{ref!r} is not an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)")
    named, account, name = match.groups()
    _same_region(ref, named, region)
    return QueueRef(validate.queue_name(name), account, named, None)


def _from_url(ref: str, region: str, region_given: bool) -> QueueRef:
    parts = urllib.parse.urlsplit(ref)
    path = [p for p in parts.path.split("/") if p]
    if len(path) != 2 or not parts.hostname or parts.query or parts.fragment:
        raise InvalidValue(f"{ref!r} is not a queue URL: it must end in /ACCOUNT/NAME")
    account, name = path
    if not _ACCOUNT.fullmatch(account):
        raise InvalidValue(f"queue URL {ref!r}: {account!r} is not a 12-digit account id")
    host = parts.hostname
    match = _HOST_REGION.search(host)
    named = next((g for g in match.groups() if g), None) if match else None
    if named is None and host == "queue.amazonaws.com":
        named = "us-east-1"
    if named is not None:
        _same_region(ref, named, region if region_given else None)
        region = named
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{account}/{name}", "", ""))
    return QueueRef(validate.queue_name(name), account, region, url)


def _same_region(ref: str, named: str, given: str | None) -> None:
    if given is not None and given != named:
        raise InvalidValue(f"--region {given} disagrees with {ref!r}, which names {named}")


def check_region(region: str) -> str:
    if not AWS_REGION.fullmatch(region):
        raise InvalidValue(f"region {region!r} is not a region name such as us-east-1")
    return region


def check_role_arn(arn: str) -> str:
    if not _ROLE_ARN.fullmatch(arn):
        raise InvalidValue(f"role {arn!r} is not an IAM role ARN "
                           "(arn:aws:iam::ACCOUNT:role/NAME)")  # fmt: skip
    return arn


def name_of(url: str) -> str:
    """A queue URL's last part: the queue's name in SQS."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def account_of(url: str) -> str | None:
    """The account a queue URL names (None: a URL of another shape)."""
    parts = url.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 and _ACCOUNT.fullmatch(parts[-2]) else None
