"""A finished run as OpenTelemetry traces and metrics, sent over OTLP (``--token-budget-otel``).

One span for the session, a span per test (its totals, outcome and budget verdicts) and a child
span per LLM call with the GenAI semantic-convention attributes, timed as the call was; the
``gen_ai.client.token.usage`` histogram and a ``tokenbudget.cost`` counter. Configured only by the
standard ``OTEL_EXPORTER_OTLP_*``, ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` variables.
Never prompt or completion text, never a header or a key: every attribute is a count, a name the
plugin routed by, or a verdict.

Exporting never fails or stalls the run: it runs on a thread of its own (a batch span processor
with a bounded queue) and is waited for until a deadline; a receiver that cannot be reached fails
the first request at once, instead of the exporter's retries with back-off, and nothing more is
sent to it. Whatever went wrong is one line, :attr:`Exported.problem`.

This module imports OpenTelemetry only inside :func:`export_run`; the ``[otel]`` extra has it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit

from ..model import Call, Run, Status, Tally, TestUsage, Verdict

DEADLINE_S: Final = 30.0
"""How long the end of a session waits for the export (``OTEL_BSP_EXPORT_TIMEOUT`` overrides)."""
MAX_QUEUED_SPANS: Final = 200_000
"""The span queue's bound: a larger run sends this many spans and reports the rest as dropped."""
BATCH: Final = 512
TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
"""The semantic conventions' advised bucket boundaries for ``gen_ai.client.token.usage``."""

# The plugin's provider names → the semantic conventions' ``gen_ai.provider.name`` values.
_PROVIDERS: Final = {
    "azure": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "google-vertex": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
}
# The last part of an ``api`` (openai.embeddings …) → ``gen_ai.operation.name``; else "chat".
_OPERATIONS: Final = {
    "embeddings": "embeddings",
    "embed": "embeddings",
    "completions": "text_completion",
    "generate": "text_completion",
    "run": "invoke_agent",
}


def provider_name(provider: str) -> str:
    return _PROVIDERS.get(provider, provider)


def operation_name(api: str) -> str:
    family, _, last = api.rpartition(".")
    if api.startswith("otel."):  # a call ingested from a span keeps the span's own operation
        return api[len("otel.") :] or "chat"
    if family == "gemini" and last == "generate":
        return "generate_content"
    return _OPERATIONS.get(last, "chat")


@dataclass(slots=True)
class CallRecord:
    """One call as the export needs it: the :class:`Call`'s counts and names, and its times."""

    owner: str
    phase: str
    provider: str
    api: str
    host: str
    model: str
    requested_model: str
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float | None
    streamed: bool
    status_code: int
    source: str
    state: str
    estimated: bool
    part: bool  # a share of another call's request billed on another model (Call.part)
    start_ns: int  # epoch nanoseconds
    end_ns: int

    @classmethod
    def of(cls, call: Call, start_ns: int, end_ns: int, requested_model: str = "") -> CallRecord:
        usage = call.usage
        return cls(
            call.owner,
            call.phase,
            call.provider,
            call.api,
            call.host,
            call.model,
            requested_model,
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.cache_write_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
            call.cost_usd,
            call.streamed,
            call.status_code,
            call.source,
            call.state,
            call.estimated,
            call.part,
            start_ns,
            end_ns,
        )

    def to_list(self) -> list[Any]:
        """JSON-safe, for an xdist worker's report to the controller."""
        return list(dataclasses.astuple(self))

    @classmethod
    def from_list(cls, values: Sequence[Any]) -> CallRecord:
        if len(values) != len(_RECORD_FIELDS):
            raise ValueError(f"a call record has {len(_RECORD_FIELDS)} fields, got {len(values)}")
        return cls(*values)


_RECORD_FIELDS: Final = tuple(f.name for f in dataclasses.fields(CallRecord))


@dataclass(slots=True)
class Exported:
    """What an export did: spans made and sent, metrics sent, and the one line if anything failed."""

    endpoint: str
    spans: int = 0
    sent: int = 0
    metrics: bool = False
    problem: str = ""

    def summary(self) -> str:
        if self.problem:
            return f"OpenTelemetry export to {self.endpoint} failed: {self.problem} (the run is not affected)"
        metrics = " and the token/cost metrics" if self.metrics else ""
        return f"OpenTelemetry: {self.sent:,} spans{metrics} sent to {self.endpoint}"


# -- the export --------------------------------------------------------------------------------------


def export_run(
    run: Run,
    calls: Sequence[CallRecord] = (),
    tests: Mapping[str, tuple[int, int]] | None = None,
    *,
    started_ns: int,
    ended_ns: int,
    environ: Mapping[str, str] | None = None,
) -> Exported:
    """Send ``run`` (its ``calls`` as child spans; ``tests`` timed by node id, epoch ns) over OTLP.

    Never raises for an export problem and returns by the deadline: see the module's docstring.
    """
    env = os.environ if environ is None else environ
    result = Exported(endpoint=_endpoint_shown(env))
    try:
        deadline = float(env.get("OTEL_BSP_EXPORT_TIMEOUT", "")) / 1000
    except ValueError:
        deadline = DEADLINE_S
    down = _unreachable(env)
    if down:  # nothing is imported, nothing is made: a receiver that is down costs one connect
        result.problem = f"cannot reach the receiver ({down})"
        return result
    try:
        pipeline = _Pipeline(env)
    except _Unusable as exc:
        result.problem = str(exc)
        return result
    worker = threading.Thread(
        target=pipeline.run,
        args=(run, calls, tests or {}, started_ns, ended_ns, result),
        name="tokenbudget-otel-export",
        daemon=True,  # never holds up the interpreter's exit
    )
    worker.start()
    worker.join(deadline if deadline > 0 else DEADLINE_S)
    if worker.is_alive():
        pipeline.abandon()  # ends the exporters' back-off waits
        worker.join(1.0)
        result.problem = result.problem or f"not finished after {deadline:g} s; the rest was dropped"
    return result


class _Unusable(Exception):
    """The exporter this environment asks for cannot be made: said in one line, nothing is sent."""


class _Pipeline:
    """The exporters the environment configures, and the providers that feed them."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.receiver = _Receiver()
        self.span_exporter, self.metric_exporter = _exporters(env, self.receiver)
        self.counted: _Counted | None = None

    def abandon(self) -> None:
        self.receiver.down = self.receiver.down or "gave up at the deadline"
        for exporter in (self.span_exporter, self.metric_exporter):
            try:
                exporter.shutdown()
            except Exception:  # an exporter that fails to shut down is abandoned anyway
                continue

    def run(
        self,
        run: Run,
        calls: Sequence[CallRecord],
        tests: Mapping[str, tuple[int, int]],
        started_ns: int,
        ended_ns: int,
        result: Exported,
    ) -> None:
        with _quiet_sdk_logs():
            try:
                self._traces(run, calls, tests, started_ns, ended_ns, result)
                result.metrics = self._metrics(run, calls)
            except Exception as exc:  # a bug here, or in the SDK: one line, never the run's failure
                result.problem = result.problem or f"{type(exc).__name__}: {exc}"
        problem = self.receiver.problem()
        if problem:
            result.problem = problem
        elif result.sent < result.spans and not result.problem:
            result.problem = f"{result.spans - result.sent:,} of {result.spans:,} spans were not sent"

    def _traces(
        self,
        run: Run,
        calls: Sequence[CallRecord],
        tests: Mapping[str, tuple[int, int]],
        started_ns: int,
        ended_ns: int,
        result: Exported,
    ) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        by_owner: dict[str, list[CallRecord]] = defaultdict(list)
        for record in calls:
            by_owner[record.owner].append(record)
        spans = 1 + len(run.tests) + len(calls)
        result.spans = spans
        self.counted = counted = _Counted(self.span_exporter)
        provider = TracerProvider(resource=_resource(), sampler=ALWAYS_ON)
        provider.add_span_processor(
            BatchSpanProcessor(
                cast("SpanExporter", counted),  # it has the interface: export, shutdown, force_flush
                max_queue_size=max(2048, min(spans, MAX_QUEUED_SPANS)),
                max_export_batch_size=BATCH,
                schedule_delay_millis=100,
            )
        )
        try:
            _emit(provider, run, by_owner, tests, started_ns, ended_ns, self.receiver)
            provider.force_flush()
        finally:
            provider.shutdown()
            result.sent = counted.sent

    def _metrics(self, run: Run, calls: Sequence[CallRecord]) -> bool:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult

        reader = InMemoryMetricReader()
        provider = MeterProvider(resource=_resource(), metric_readers=[reader])
        try:
            meter = provider.get_meter("pytest_tokenbudget")
            tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used",
                explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
            )
            cost = meter.create_counter("tokenbudget.cost", unit="USD", description="Cost of LLM calls")
            for attributes, input_tokens, output_tokens, usd in _measurements(run, calls):
                tokens.record(input_tokens, {**attributes, "gen_ai.token.type": "input"})
                tokens.record(output_tokens, {**attributes, "gen_ai.token.type": "output"})
                if usd is not None:
                    cost.add(usd, attributes)
            data = reader.get_metrics_data()
        finally:
            provider.shutdown()
        if data is None or self.receiver.down:
            return False
        with _suppressed_instrumentation():
            sent = self.metric_exporter.export(data, timeout_millis=10_000)
        self.metric_exporter.shutdown()
        return bool(sent is MetricExportResult.SUCCESS)


def _exporters(env: Mapping[str, str], receiver: _Receiver) -> tuple[Any, Any]:
    """The span and metric exporters ``OTEL_EXPORTER_OTLP_PROTOCOL`` asks for (http/protobuf by
    default; grpc when its exporter is installed)."""
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetrics,
            )
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
        except ImportError:
            raise _Unusable(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc installed"
            ) from None
        return GrpcSpans(), GrpcMetrics()
    if protocol != "http/protobuf":
        raise _Unusable(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported (http/protobuf or grpc)")
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise _Unusable(
            "the OTLP exporter is not installed: pip install 'pytest-tokenbudget[otel]'"
        ) from None
    session = receiver.session()
    return OTLPSpanExporter(session=session), OTLPMetricExporter(session=session)


class _Receiver:
    """What became of the requests to the receiver: the first failure stops the export (never a
    header or a body in what is kept)."""

    def __init__(self) -> None:
        self.down = ""  # why nothing more is sent

    def problem(self) -> str:
        if self.down.startswith("HTTP "):
            return f"the receiver answered {self.down}; nothing more was sent"
        return f"cannot reach the receiver ({self.down})" if self.down else ""

    def session(self) -> Any:
        """A ``requests`` session for the HTTP exporters that fails at once, with an error the
        exporter does not retry, when the receiver cannot be reached or answers with an error:
        its retries back off for up to ``OTEL_EXPORTER_OTLP_TIMEOUT`` per batch, and the run would
        wait. After the first failure every request fails without being sent."""
        import requests

        receiver = self

        class FailFast(requests.Session):
            def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
                if receiver.down:
                    raise _ReceiverDown(receiver.down)
                try:
                    try:
                        response = super().request(method, url, *args, **kwargs)
                    except requests.ConnectionError:  # a stale pooled connection: once more, at once
                        response = super().request(method, url, *args, **kwargs)
                except requests.RequestException as exc:
                    receiver.down = type(exc).__name__
                    raise _ReceiverDown(receiver.down) from None
                if response.status_code >= 400:
                    receiver.down = f"HTTP {response.status_code}"
                    raise _ReceiverDown(receiver.down)
                return response

        return FailFast()


class _ReceiverDown(Exception):
    """Raised in place of a connection error: not one the exporter retries."""


class _Counted:
    """A span exporter that counts what its inner exporter sent, and stops once the receiver is down."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent = 0

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.sent += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


# -- what is sent ------------------------------------------------------------------------------------


def _emit(
    provider: Any,
    run: Run,
    by_owner: Mapping[str, list[CallRecord]],
    tests: Mapping[str, tuple[int, int]],
    started_ns: int,
    ended_ns: int,
    receiver: _Receiver,
) -> None:
    """The session span, a span per entry of ``run.tests`` under it, a span per call under that
    (no more once the receiver has failed: nothing more would be sent)."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, StatusCode
    from opentelemetry.trace import Status as SpanStatus

    tracer = provider.get_tracer("pytest_tokenbudget")
    verdicts: dict[str, list[Verdict]] = defaultdict(list)
    for verdict in run.verdicts:
        verdicts[verdict.nodeid].append(verdict)
    times = {nodeid: _enclosing(tests.get(nodeid), by_owner.get(nodeid, ())) for nodeid in run.tests}
    first = min([started_ns, *(t[0] for t in times.values() if t)])
    last = max([ended_ns, *(t[1] for t in times.values() if t)])
    session = tracer.start_span(
        "pytest session",
        kind=SpanKind.INTERNAL,
        attributes=_session_attributes(run, verdicts[""]),
        start_time=first,
    )
    if run.meta.get("exit_status") not in (None, 0):
        session.set_status(SpanStatus(StatusCode.ERROR, f"exit status {run.meta['exit_status']}"))
    parent = trace.set_span_in_context(session)
    for nodeid in sorted(run.tests):
        if receiver.down:
            break
        entry = run.tests[nodeid]
        start, end = times[nodeid] or (first, last)
        span = tracer.start_span(
            nodeid, context=parent, attributes=_test_attributes(entry, verdicts[nodeid]), start_time=start
        )
        if entry.outcome in ("failed", "error") or _worst(verdicts[nodeid]) == Status.EXCEEDED:
            span.set_status(SpanStatus(StatusCode.ERROR, entry.outcome or "budget exceeded"))
        inside = trace.set_span_in_context(span)
        for record in by_owner.get(nodeid, ()):
            child = tracer.start_span(
                f"{operation_name(record.api)} {record.model}",
                context=inside,
                kind=SpanKind.CLIENT,
                attributes=call_attributes(record),
                start_time=record.start_ns,
            )
            if record.state == "failed":
                child.set_status(SpanStatus(StatusCode.ERROR))
            child.end(end_time=max(record.end_ns, record.start_ns))
        span.end(end_time=end)
    session.end(end_time=last)


def _enclosing(timed: tuple[int, int] | None, calls: Sequence[CallRecord]) -> tuple[int, int] | None:
    """A test's span times: its own, widened to hold each of its calls (a stream settled later)."""
    starts = [r.start_ns for r in calls] + ([timed[0]] if timed else [])
    ends = [max(r.end_ns, r.start_ns) for r in calls] + ([timed[1]] if timed else [])
    return (min(starts), max(ends)) if starts else None


def call_attributes(record: CallRecord) -> dict[str, Any]:
    """A call's span attributes: the GenAI conventions', then the plugin's own."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation_name(record.api),
        "gen_ai.provider.name": provider_name(record.provider),
        "gen_ai.response.model": record.model,
        "gen_ai.request.model": record.requested_model or record.model,
        "gen_ai.usage.input_tokens": record.input_tokens,
        "gen_ai.usage.output_tokens": record.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": record.cached_input_tokens,
        "gen_ai.usage.cache_creation.input_tokens": record.cache_write_tokens,
        "gen_ai.usage.reasoning.output_tokens": record.reasoning_tokens,
        "tokenbudget.test": record.owner,
        "tokenbudget.phase": record.phase,
        "tokenbudget.api": record.api,
        "tokenbudget.streamed": record.streamed,
        "tokenbudget.source": record.source,
        "tokenbudget.state": record.state,
        "tokenbudget.estimated": record.estimated,
    }
    if record.part:
        attributes["tokenbudget.part"] = True
    if record.host:
        attributes["server.address"] = record.host
    if record.status_code:
        attributes["http.response.status_code"] = record.status_code
    if record.cost_usd is not None:
        attributes["tokenbudget.cost_usd"] = record.cost_usd
    if record.state == "failed":
        attributes["error.type"] = f"HTTP {record.status_code}" if record.status_code else "failed"
    return attributes


def _usage_attributes(tally: Tally) -> dict[str, Any]:
    return {
        "gen_ai.usage.input_tokens": tally.input_tokens,
        "gen_ai.usage.output_tokens": tally.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": tally.cached_input_tokens,
        "gen_ai.usage.cache_creation.input_tokens": tally.cache_write_tokens,
        "gen_ai.usage.reasoning.output_tokens": tally.reasoning_tokens,
        "tokenbudget.total_tokens": tally.total_tokens,
        "tokenbudget.cost_usd": round(tally.cost_usd, 10),
        "tokenbudget.cost_known": tally.cost_known,
        "tokenbudget.calls": tally.calls,
        "tokenbudget.live_calls": tally.live_calls,
        "tokenbudget.replayed_calls": tally.replayed_calls,
        "tokenbudget.estimated_calls": tally.estimated_calls,
    }


def _verdict_attributes(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    if not verdicts:
        return {}
    return {
        "tokenbudget.budget.status": _worst(verdicts),
        "tokenbudget.budget.verdicts": [
            f"{v.name} {v.metric}: {v.actual:g} of {v.limit:g} ({v.status})" for v in verdicts
        ],
    }


_SEVERITY: Final[dict[str, int]] = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARN: 2, Status.EXCEEDED: 3}


def _worst(verdicts: Sequence[Verdict]) -> str:
    return max((v.status for v in verdicts), key=lambda s: _SEVERITY.get(s, 0), default="")


def _test_attributes(entry: TestUsage, verdicts: Sequence[Verdict]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"test.case.name": entry.nodeid, "tokenbudget.kind": entry.kind}
    if entry.outcome:
        attributes["tokenbudget.outcome"] = entry.outcome
        if entry.outcome in ("passed", "failed", "error"):
            attributes["test.case.result.status"] = "pass" if entry.outcome == "passed" else "fail"
    if entry.path:
        attributes["code.file.path"] = entry.path
    if entry.line is not None:
        attributes["code.line.number"] = entry.line
    if entry.models:
        attributes["tokenbudget.models"] = sorted(entry.models)
    return {**attributes, **_usage_attributes(entry.total), **_verdict_attributes(verdicts)}


def _session_attributes(run: Run, verdicts: Sequence[Verdict]) -> dict[str, Any]:
    meta = run.meta
    attributes: dict[str, Any] = {"test.suite.name": "pytest"}
    for key, name in (
        ("commit", "vcs.ref.head.revision"),
        ("branch", "vcs.ref.head.name"),
        ("plugin_version", "tokenbudget.version"),
        ("pytest_version", "tokenbudget.pytest_version"),
        ("started", "tokenbudget.started"),
    ):
        if isinstance(meta.get(key), str) and meta[key]:
            attributes[name] = meta[key]
    if isinstance(meta.get("exit_status"), int):
        attributes["tokenbudget.exit_status"] = meta["exit_status"]
        attributes["test.suite.run.status"] = "success" if meta["exit_status"] == 0 else "failure"
    if isinstance(meta.get("partial"), bool):
        attributes["tokenbudget.partial"] = meta["partial"]
    attributes.update(ci_attributes())
    attributes["tokenbudget.tests"] = sum(1 for _ in run.iter_tests())
    return {**attributes, **_usage_attributes(run.totals()), **_verdict_attributes(verdicts)}


def ci_attributes(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CI run this process belongs to, when the CI says (GitHub Actions, GitLab, Buildkite,
    CircleCI, Jenkins)."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_RUN_ID"):
        run_id = env["GITHUB_RUN_ID"]
        attributes = {"cicd.pipeline.run.id": run_id, "cicd.pipeline.name": env.get("GITHUB_WORKFLOW", "")}
        if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY"):
            url = f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{run_id}"
            attributes["cicd.pipeline.run.url.full"] = url
        return {k: v for k, v in attributes.items() if v}
    for variable, url in (
        ("CI_PIPELINE_ID", "CI_PIPELINE_URL"),
        ("BUILDKITE_BUILD_ID", "BUILDKITE_BUILD_URL"),
        ("CIRCLE_WORKFLOW_ID", "CIRCLE_BUILD_URL"),
        ("BUILD_TAG", "BUILD_URL"),
    ):
        if env.get(variable):
            found = {"cicd.pipeline.run.id": env[variable]}
            if env.get(url):
                found["cicd.pipeline.run.url.full"] = env[url]
            return found
    return {}


def _measurements(
    run: Run, calls: Sequence[CallRecord]
) -> Iterator[tuple[dict[str, Any], int, int, float | None]]:
    """(attributes, input tokens, output tokens, USD) per call; from a saved run without its calls,
    per test and model (its ``tokenbudget.calls`` says how many calls each stands for)."""
    attributes: dict[str, Any]
    if calls:
        for record in calls:
            attributes = {
                "gen_ai.operation.name": operation_name(record.api),
                "gen_ai.provider.name": provider_name(record.provider),
                "gen_ai.request.model": record.requested_model or record.model,
                "gen_ai.response.model": record.model,
                "tokenbudget.test": record.owner,
                "tokenbudget.source": record.source,
            }
            if record.host:
                attributes["server.address"] = record.host
            yield attributes, record.input_tokens, record.output_tokens, record.cost_usd
        return
    for nodeid, entry in run.tests.items():
        for key, tally in entry.models.items():
            if not tally.calls:
                continue
            provider, _, model = key.partition("/")
            attributes = {
                "gen_ai.provider.name": provider_name(provider),
                "gen_ai.response.model": model,
                "tokenbudget.test": nodeid,
                "tokenbudget.calls": tally.calls,
            }
            usd = tally.cost_usd if tally.calls > tally.unpriced_calls else None
            yield attributes, tally.input_tokens, tally.output_tokens, usd


def _resource() -> Any:
    """``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``; "pytest-tokenbudget" when unnamed."""
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "pytest-tokenbudget"}))
    return resource


def _endpoint(env: Mapping[str, str]) -> str:
    """The traces endpoint as configured (or the default of the configured protocol)."""
    raw = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""
    ).strip()
    if raw:
        return raw
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    return "http://localhost:4317" if protocol.strip() == "grpc" else "http://localhost:4318"


def _unreachable(env: Mapping[str, str]) -> str:
    """Why no TCP connection to the traces endpoint can be made ("" when one can, or when a proxy
    stands between): the OpenTelemetry SDK is then not even imported."""
    import socket
    import urllib.request

    raw = _endpoint(env)
    try:
        parts = urlsplit(raw if "://" in raw else f"http://{raw}")
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return ""  # the exporter says what is wrong with it
    if not host or (urllib.request.getproxies() and not urllib.request.proxy_bypass(host)):
        return ""
    try:
        timeout = min(float(env.get("OTEL_EXPORTER_OTLP_TIMEOUT") or 10), 10.0)
    except ValueError:
        timeout = 10.0
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return type(exc).__name__
    return ""


def _endpoint_shown(env: Mapping[str, str]) -> str:
    """The traces endpoint for messages: scheme, host, port and path only (no userinfo, no query)."""
    raw = _endpoint(env)
    try:
        parts = urlsplit(raw)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the configured endpoint"
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else re.sub(r"[@?].*", "", raw)


@contextmanager
def _quiet_sdk_logs() -> Iterator[None]:
    """The SDK logs each failed batch (and retry); the run reports a failure once, itself."""
    logger = logging.getLogger("opentelemetry")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _suppressed_instrumentation() -> Iterator[None]:
    """No instrumentation of the code under test (requests, urllib3) traces the export's own request,
    as the SDK's batch processor does for spans."""
    from opentelemetry import context

    token = context.attach(context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        context.detach(token)


def export_otel_command(path: Path) -> int:
    """``tokenbudget export-otel RUN.json``: the saved run, sent once; 0 when it all went, else 1
    (one line on stderr). Timed by its ``meta.started`` and ``meta.finished``."""
    from ..runs.artifact import load_run

    run = load_run(path)
    now = time.time_ns()
    started, finished = (_epoch_ns(run.meta.get(key)) for key in ("started", "finished"))
    exported = export_run(run, started_ns=started or finished or now, ended_ns=finished or now)
    if exported.problem:
        print(f"tokenbudget: {exported.summary()}", file=sys.stderr)
        return 1
    print(exported.summary())
    return 0


def _epoch_ns(stamp: Any) -> int:
    """An artifact's ISO time as epoch nanoseconds; 0 when it is not one."""
    if not isinstance(stamp, str):
        return 0
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e9)
