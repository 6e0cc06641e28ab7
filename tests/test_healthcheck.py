"""`python -m mipro.healthcheck`, the images' HEALTHCHECK, against real servers."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mipro._stack import free_port


def _healthcheck(target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mipro.healthcheck", target],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def grpc_health() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(0)


def test_grpc_serving_is_healthy_and_not_serving_is_not(
        grpc_health: tuple[str, health.HealthServicer]) -> None:
    address, servicer = grpc_health
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert _healthcheck(f"grpc://{address}").returncode == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    failed = _healthcheck(f"grpc://{address}")
    assert failed.returncode == 1
    assert failed.stderr.strip() == f"unhealthy: {address}: NOT_SERVING"


def test_nothing_listening_is_unhealthy_with_the_reason() -> None:
    port = free_port()  # free: nothing listens there
    failed = _healthcheck(f"grpc://127.0.0.1:{port}")
    assert failed.returncode == 1 and "UNAVAILABLE" in failed.stderr


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_http_2xx_is_healthy_and_5xx_is_not() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert _healthcheck(f"{base}/healthz").returncode == 0
        failed = _healthcheck(f"{base}/other")
        assert failed.returncode == 1 and failed.stderr.strip().endswith("HTTP 503")
    finally:
        server.shutdown()
        server.server_close()


def test_a_malformed_target_names_the_variable() -> None:
    failed = _healthcheck("tcp://127.0.0.1:1")
    assert failed.returncode == 1 and "MIPRO_HEALTHCHECK" in failed.stderr

