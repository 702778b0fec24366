"""Send batches sized within SQS's limits (one sizer for `queue send` and redrive)."""

from __future__ import annotations

import pytest

from orchestrator import validate
from orchestrator.backends.batches import message_size, sized_batches

LIMIT = validate.MAX_BODY_BYTES


@pytest.mark.parametrize(("sizes", "expected"), [
    ([], []),
    ([1] * 25, [[1] * 10, [1] * 10, [1] * 5]),
    ([LIMIT // 2] * 3, [[LIMIT // 2] * 2, [LIMIT // 2]]),
    ([LIMIT // 2 + 1] * 3, [[LIMIT // 2 + 1]] * 3),
    ([LIMIT + 5, 1, 1], [[LIMIT + 5], [1, 1]]),  # over the limit alone: sent alone
    ([1, LIMIT, 1], [[1], [LIMIT], [1]]),
    ([LIMIT - 9] + [1] * 10, [[LIMIT - 9] + [1] * 9, [1]]),
])  # fmt: skip
def test_batches_keep_order_ten_at_most_and_within_the_limit(
    sizes: list[int], expected: list[list[int]]
) -> None:
    assert list(sized_batches(sizes, lambda n: n)) == expected


def test_a_message_counts_its_body_bytes_and_attributes() -> None:
    assert message_size("é") == 2
    attributes = {"traceparent": {"DataType": "String", "StringValue": "00-ab"}}
    assert message_size("x", attributes) == 1 + len("traceparent") + len("String") + 5
    assert message_size("x", {"b": {"DataType": "Binary", "BinaryValue": b"\0\1"}}) == 1 + 1 + 6 + 2
