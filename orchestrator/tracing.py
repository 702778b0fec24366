"""OpenTelemetry traces, when installed (`pip install 'orchestrator[otel]'`) and configured
with the standard OTEL_* variables; otherwise every call here does nothing.

- A consumer span per handled message (or batch), named `process <queue>`, with the
  messaging conventions' attributes for SQS; a child of the producer's trace when the
  message carries a `traceparent` attribute (a batch links to each message's instead);
  a failure is recorded on it (its exception, status ERROR).
- A span per job in the worker, from its assignment to its end.

Configured: OTEL_TRACES_EXPORTER is `otlp` or `console` (not `none`), or an OTLP
endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and
OTEL_SDK_DISABLED is not `true`. The SDK reads the rest of OTEL_* itself (service name,
batch delays, headers).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator.models import MAX_ERROR_BYTES, clip

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from orchestrator.message import Message

TRACEPARENT = "traceparent"  # the message attribute with the producer's trace context
SYSTEM = "aws_sqs"
FLUSH_SECONDS = 1.0  # the most a process's last export may take at shutdown (a healthy
# collector takes milliseconds; a worker flushes after its consumers: the waits add up)
_provider: Any = None
_exporters: list[Any] = []  # this process's, to stop a flush that outlives its budget
_disabled = ""  # why tracing is off in this process (said once)


def configured(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))  # fmt: skip


def check() -> None:
    """The daemon's one look at its tracing configuration, in the supervisor before any
    role starts. When tracing cannot be used (the extra is not installed, or the SDK
    refuses an OTEL_* value such as OTEL_BSP_SCHEDULE_DELAY=-5) it says why once,
    `tracing.unavailable` or `tracing.disabled`, and sets OTEL_SDK_DISABLED=true for
    every process it starts (they inherit its environment): each then runs without
    traces, saying nothing. Tracing is optional: it never stops the daemon."""
    if not configured():
        return
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        structlog.get_logger().warning(
            "tracing.unavailable", reason="OTEL_* is set but the opentelemetry packages are "
            "not installed", fix="pip install 'orchestrator[otel]'")
        os.environ["OTEL_SDK_DISABLED"] = "true"
        return
    try:
        _build("supervisor").shutdown()  # nothing buffered: only a check
    except Exception as exc:  # whatever the SDK raises about its configuration
        _disable(exc)
        os.environ["OTEL_SDK_DISABLED"] = "true"


def tracer(role: str) -> Tracer | None:
    """This process's tracer, set up once; None when traces are off, not installed, or
    configured in a way the SDK refuses (said once, as `tracing.disabled`)."""
    global _provider
    if not configured() or _disabled:
        return None
    try:
        from opentelemetry import trace
    except ImportError:  # the supervisor said so, once for the daemon
        return None
    if _provider is None:
        try:
            _provider = _build(role)
        except Exception as exc:  # tracing is optional: run without it
            _disable(exc)
            return None
        trace.set_tracer_provider(_provider)
    return trace.get_tracer("orchestrator")


def _build(role: str) -> Any:
    """A TracerProvider with a batch processor per exporter OTEL_TRACES_EXPORTER names
    (otlp by default); raises what the SDK raises about a bad OTEL_* value."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")
    # shutdown() below is bounded; the SDK's own at exit is not.
    provider = TracerProvider(resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "orchestrator"),
         "orchestrator.role": role}), shutdown_on_exit=False)  # fmt: skip
    for name in (n.strip() for n in names):
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(_stoppable(ConsoleSpanExporter())))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(_stoppable(OTLPSpanExporter())))
    return provider


def _stoppable(exporter: Any) -> Any:
    """`exporter` behind a stop: shutdown() ends an export that retries against an
    unreachable endpoint (its backoff waits on the exporter's shutdown), and after it
    exports and shutdowns are quiet no-ops (the SDK would log a warning for each)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Stoppable(SpanExporter):
        stopped = False

        def export(self, spans: Any) -> Any:
            return SpanExportResult.FAILURE if self.stopped else exporter.export(spans)

        def shutdown(self) -> None:
            if not self.stopped:
                self.stopped = True
                exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return bool(exporter.force_flush(timeout_millis))

    stoppable = Stoppable()
    _exporters.append(stoppable)
    return stoppable


def _disable(exc: BaseException) -> None:
    """Say once in this process why tracing is off; the daemon runs on without it."""
    global _disabled
    if not _disabled:
        _disabled = f"{type(exc).__name__}: {exc}"
        structlog.get_logger().warning("tracing.disabled", reason=_disabled,
                                       fix="correct or unset the OTEL_* variable it names")


def shutdown(grace: float) -> None:
    """Export what is still buffered (a process's last act), for at most FLUSH_SECONDS
    and never beyond `grace` (SHUTDOWN_GRACE): an unreachable endpoint made the SDK retry
    for 10 s and more. What is not exported by then is dropped."""
    if _provider is None:
        return
    budget = max(0.0, min(FLUSH_SECONDS, grace))
    flush = threading.Thread(target=_provider.shutdown, name="tracing-flush", daemon=True)
    flush.start()
    flush.join(budget)
    if flush.is_alive():
        for exporter in _exporters:
            exporter.shutdown()  # ends the export's retries; the flush thread then returns
        flush.join(0.5)
        structlog.get_logger().warning("tracing.flush_cut", seconds=budget)


@contextlib.contextmanager
def processing(
    tracer: Tracer | None, messages: list[Message], batch: bool
) -> Iterator[Span | None]:
    """The consumer span of one handler call (nothing when traces are off)."""
    if tracer is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.propagate import extract

    first = messages[0]
    carriers = [_carrier(m) for m in messages]
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": first.queue_name,
        "aws.sqs.queue.url": first.queue_url,
    }
    context, links = None, []
    if batch:
        attributes["messaging.batch.message_count"] = len(messages)
        links = [trace.Link(trace.get_current_span(extract(c)).get_span_context())
                 for c in carriers if c]  # fmt: skip
    else:
        attributes["messaging.message.id"] = first.message_id
        attributes["aws.sqs.message.receive_count"] = first.receive_count  # not in the conventions
        context = extract(carriers[0]) if carriers[0] else None
    with tracer.start_as_current_span(f"process {first.queue_name}", context=context,
                                      kind=trace.SpanKind.CONSUMER, attributes=attributes,
                                      links=links, record_exception=False,
                                      set_status_on_exception=False) as span:  # fmt: skip
        yield span


def failed(span: Span | None, error: str, exc: BaseException | None,
           trace: str | None = None) -> None:  # fmt: skip
    """Record a handler's failure on its span: `error` and `trace` as the failure keeps
    them (cut to a few KiB), not the exception's whole text."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if exc is not None:
        cut = {"exception.message": clip(str(exc), MAX_ERROR_BYTES)}
        span.record_exception(exc, cut | ({"exception.stacktrace": trace} if trace else {}))
    span.set_attribute("error.type", error.partition(":")[0])
    span.set_status(Status(StatusCode.ERROR, error))


def _carrier(message: Message) -> dict[str, str]:
    attr = message.message_attributes.get(TRACEPARENT) or {}
    value = attr.get("StringValue") if isinstance(attr, dict) else None
    return {TRACEPARENT: value} if value else {}


def traceparent_attribute() -> dict[str, dict[str, str]]:
    """A message attribute carrying new_traceparent(), as SQS takes it."""
    return {TRACEPARENT: {"DataType": "String", "StringValue": new_traceparent()}}


def new_traceparent() -> str:
    """A W3C traceparent for a message sent by `queue send --trace`: the current span's
    when a tracer is set up, else a new trace of its own."""
    if configured():
        with contextlib.suppress(ImportError):
            from opentelemetry.propagate import inject

            carrier: dict[str, str] = {}
            inject(carrier)
            if carrier.get(TRACEPARENT):
                return carrier[TRACEPARENT]
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
