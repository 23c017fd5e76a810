"""A loopback OTLP/HTTP receiver: ``POST /v1/traces`` and ``/v1/metrics`` decoded with
``opentelemetry-proto`` (the collector's own message types) into plain dicts the tests assert on.

``status`` steers it: 200 (the default) or an error status it answers every request with.
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def value_of(any_value: Any) -> Any:
    """An ``AnyValue`` as Python (strings, ints, floats, bools, arrays)."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def attributes_of(pairs: Any) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs}


class OTLPReceiver:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.spans: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.received(self.path, body, dict(self.headers))
                self.send_response(receiver.status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        with self._lock:
            self.raw.append(body)
            self.headers.append(headers)
            if path == "/v1/traces":
                self._traces(body)
            elif path == "/v1/metrics":
                self._metrics(body)

    def _traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            self.resources.append(attributes_of(resource_spans.resource.attributes))
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "attributes": attributes_of(span.attributes),
                            "status": span.status.code,
                        }
                    )

    def _metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for resource_metrics in request.resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    points = []
                    for point in getattr(metric, kind).data_points:
                        value = (
                            point.sum
                            if kind == "histogram"
                            else (point.as_double if point.HasField("as_double") else point.as_int)
                        )
                        count = point.count if kind == "histogram" else 1
                        points.append(
                            {"attributes": attributes_of(point.attributes), "value": value, "count": count}
                        )
                    self.metrics.append(
                        {"name": metric.name, "unit": metric.unit, "kind": kind, "points": points}
                    )


class GrpcOTLPReceiver(OTLPReceiver):
    """The same receiver over OTLP/gRPC (the collector's TraceService and MetricsService)."""

    def __init__(self) -> None:
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        super().__init__()
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                receiver.received("/v1/traces", request.SerializeToString(), {})
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                receiver.received("/v1/metrics", request.SerializeToString(), {})
                return metrics_service_pb2.ExportMetricsServiceResponse()

        from concurrent.futures import ThreadPoolExecutor

        self._grpc = grpc.server(ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._grpc)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._grpc)
        self._port = self._grpc.add_insecure_port("127.0.0.1:0")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> GrpcOTLPReceiver:
        self._grpc.start()
        return self

    def stop(self) -> None:
        self._grpc.stop(grace=None)
        self._server.server_close()  # the HTTP server of the base class never served
