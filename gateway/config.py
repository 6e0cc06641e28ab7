"""Builds the Envoy gateway's configuration: REST (and h2c gRPC) in front of the orchestrator.

One HTTP listener (HTTP/1.1 and h2c, codec `AUTO`) carries four kinds of traffic, told apart
by routes that match the request as it arrived (`match_incoming_request_route`):

- native gRPC (`content-type: application/grpc`) for the orchestrator, passed through untouched;
- the public job API as REST, translated to gRPC by the gRPC-JSON transcoder from the
  `google.api.http` annotations in `protos/mipro/v1/jobs.proto` (descriptor
  `gateway/mipro_v1.pb`, made by `python -m gateway.codegen`); the live event stream is NDJSON;
- `/v1/...`, the policy-model interceptor, proxied as plain HTTP/1.1 (no transcoding);
- `/healthz`, answered by Envoy itself.

Filters, in order: `header_mutation` (drops the `grpc-*` headers from REST responses),
`local_ratelimit` (a token bucket per API key, 429 beyond), `buffer` (caps a request body at
4 MiB, and at 2 MiB on `/v1/`; 413 beyond), the transcoder, the router.

What the gateway protects (`GatewayProtections`, from the `MIPRO_GATEWAY_*` settings):

- a request's headers must arrive within `request_headers_timeout`, and a request that moves
  no data for `stream_idle_timeout` is closed; the live event streams (REST and gRPC) are
  exempt, because a job may be silent for minutes (a proposal call) and the stream sends no
  heartbeat;
- the job API (REST and native gRPC) allows `rate_limit_per_minute` requests per API key,
  told by the `Authorization` or `x-api-key` header (one bucket per distinct value; requests
  without either share one); the `/v1/` interceptor route is not limited here (the
  interceptor meters model calls per job);
- native gRPC reaches only the public services (`SERVICES`); reflection and health checking
  answer `PERMISSION_DENIED` from outside unless `expose_grpc_introspection` is set, and every
  other gRPC method too;
- with a certificate and key, the listener terminates TLS (`DownstreamTlsContext`, ALPN `h2`
  and `http/1.1`), for REST and gRPC alike.

Every error Envoy produces itself (bad JSON, unknown path, body too large,
upstream down) is a JSON body `{"code": <http status>, "message": "..."}`; errors of the gRPC
server come back as the transcoder's `{"code": <grpc code>, "message": "...", "details": [...]}`
with the mapped HTTP status.

With `metrics_port`, a second listener on the same host serves Envoy's own stats for
Prometheus: `/stats/prometheus` (also as `/metrics`) is proxied to the admin interface, which
stays on loopback, and nothing else of the admin interface is reachable there (any other
path is 404). The committed renderings have it on port 9902.

`python -m gateway.config` rewrites the committed renderings, `gateway/envoy.yaml` (local
development, run from the repository root), `gateway/envoy.compose.yaml` (docker-compose) and
`deploy/k8s/base/gateway/envoy.yaml` (Kubernetes, with a copy of the descriptor beside it),
and the inference gateway's `gateway/envoy.inference.compose.yaml` and
`deploy/k8s/base/inference-gateway/envoy.yaml`; `--check` exits 1 when one is stale.
"""

from __future__ import annotations

import argparse
import importlib.resources
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mipro._settings import Settings

#: The checkout, for the dev tooling that rewrites the committed renderings; nothing that runs
#: the stack reads it (see `packaged_descriptor`).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The gateway's files in the Kubernetes base (a ConfigMap is generated from them).
K8S_GATEWAY_DIR = REPO_ROOT / "deploy" / "k8s" / "base" / "gateway"
#: The inference gateway's file in the Kubernetes base (its own ConfigMap).
K8S_INFERENCE_GATEWAY_DIR = K8S_GATEWAY_DIR.parent / "inference-gateway"
#: The transcoder's descriptor set, package data of `gateway`.
DESCRIPTOR_RESOURCE = "mipro_v1.pb"

#: The gRPC services the transcoder exposes as REST.
SERVICES = ("mipro.v1.JobService", "mipro.v1.EnvironmentKeyService",
            "mipro.v1.SynthCompatService", "mipro.v1.OfflineJobService")
#: The service of the SSE event stream, transcoded only on the route that accepts SSE (its
#: path is the NDJSON stream's, so one transcoder cannot list both).
SSE_SERVICES = ("mipro.v1.SynthEventStreamService",)
#: Largest request body the transcoder buffers (it needs the whole JSON body).
MAX_REQUEST_BODY_BYTES = 4 * 1024 * 1024
#: Largest unary response body the transcoder buffers.
MAX_RESPONSE_BODY_BYTES = 16 * 1024 * 1024
#: Time limit of a unary call through the gateway, by default
#: (`MIPRO_GATEWAY_API_TIMEOUT_SECONDS`).
API_TIMEOUT_SECONDS: float = Settings.model_fields["gateway_api_timeout_seconds"].default
#: Time limit of a policy-model call through the interceptor (a slow completion included), by
#: default (`MIPRO_GATEWAY_INTERCEPTOR_TIMEOUT_SECONDS`).
INTERCEPTOR_TIMEOUT_SECONDS: float = (
    Settings.model_fields["gateway_interceptor_timeout_seconds"].default)
#: TCP connect limit towards either upstream.
CONNECT_TIMEOUT = "1s"
#: The live event stream: a regex on the REST path (routes match REST paths because of
#: `match_incoming_request_route`).
EVENT_STREAM_PATH_REGEX = (r"^/api/(policy-optimization/online|v1/offline)/jobs/[^/]+"
                           r"/events/stream$")
#: Headers of the gRPC wire that mean nothing to a REST client.
GRPC_RESPONSE_HEADERS = (
    "grpc-status",
    "grpc-message",
    "grpc-accept-encoding",
    "grpc-encoding",
    "grpc-status-details-bin",
)

_TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
_HEADER_MUTATION = "envoy.filters.http.header_mutation"
_BUFFER = "envoy.filters.http.buffer"
_RATE_LIMIT = "envoy.filters.http.local_ratelimit"
#: The services of the gRPC introspection a gateway hides by default.
INTROSPECTION_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
#: The headers whose value names the caller for the rate limit.
RATE_LIMIT_HEADERS = ("authorization", "x-api-key")
_ROUTER = "envoy.filters.http.router"
_ORCHESTRATOR_CLUSTER = "orchestrator_grpc"
_INTERCEPTOR_CLUSTER = "interceptor_http"
_DISABLED = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
_ADMIN_CLUSTER = "envoy_admin"
#: The port of the metrics listener in the committed renderings (`MIPRO_GATEWAY_METRICS_PORT`
#: for `mipro up` and the stack).
RENDERED_METRICS_PORT = 9902


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cluster(name: str, host: str, port: int, *, http2: bool) -> dict[str, Any]:
    """A one-host cluster; a DNS name (a compose service) is re-resolved, an IP is static."""
    if http2:
        protocol: dict[str, Any] = {
            "http2_protocol_options": {
                # Finds a dead orchestrator behind a long-lived event stream.
                "connection_keepalive": {"interval": "30s", "timeout": "5s"},
            }
        }
    else:
        protocol = {"http_protocol_options": {}}
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                ".HttpProtocolOptions",
                "explicit_http_config": protocol,
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket_address(host, port)}}]}
            ],
        },
    }
    if not _is_ip(host):
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    return cluster


def _orchestrator_cluster(host: str, port: int) -> dict[str, Any]:
    cluster = _cluster(_ORCHESTRATOR_CLUSTER, host, port, http2=True)
    cluster["health_checks"] = [
        {
            # A busy orchestrator (its event loop full of rollouts) may take a few seconds to
            # answer; a dead one is refused at once, so a patient timeout costs nothing there.
            # At 1 s and 2 misses, 20 running jobs made the gateway refuse every API call
            # (BENCHMARKS.md, "20 jobs running").
            "timeout": "5s",
            "interval": "5s",
            # Without traffic (the host is unhealthy, so there is none) Envoy would otherwise
            # check only every 60 s, and an orchestrator starting after the gateway would wait.
            "no_traffic_interval": "2s",
            "unhealthy_interval": "2s",
            "unhealthy_threshold": 3,
            "healthy_threshold": 1,
            "grpc_health_check": {"service_name": ""},
        }
    ]
    # With one host, the default panic threshold would route to it even when unhealthy.
    cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    return cluster


def packaged_descriptor() -> Path:
    """The descriptor set installed with this package, as a file path Envoy can read."""
    path = Path(str(importlib.resources.files("gateway") / DESCRIPTOR_RESOURCE))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the gateway's descriptor set is missing from the installed package "
            "(reinstall it, or run `make protos` in a checkout)")
    return path


def _transcoder(descriptor_path: str,
                services: tuple[str, ...] = SERVICES) -> dict[str, Any]:
    return {
        "name": _TRANSCODER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3"
            ".GrpcJsonTranscoder",
            "proto_descriptor": descriptor_path,
            "services": list(services),
            "match_incoming_request_route": True,
            "convert_grpc_status": True,
            "print_options": {
                "add_whitespace": False,
                "always_print_primitive_fields": True,
                "always_print_enums_as_ints": False,
                "preserve_proto_field_names": True,
                "stream_newline_delimited": True,
            },
            # Unknown query parameters are dropped before transcoding (without this, and with
            # `reject_unknown_query_parameters` off, the call reaches the server broken: 503).
            "ignore_unknown_query_parameters": True,
            "request_validation_options": {
                "reject_unknown_method": True,
                # Unknown query parameters are ignored, not refused: Synth's client adds a
                # cache-busting `_t` to every status poll (README "Using Synth's SDK").
                "reject_unknown_query_parameters": False,
            },
            "max_request_body_size": MAX_REQUEST_BODY_BYTES,
            "max_response_body_size": MAX_RESPONSE_BODY_BYTES,
        },
    }


def _buffer() -> dict[str, Any]:
    # The transcoder's own `max_request_body_size` bounds only its not-yet-parsed JSON: a
    # 64 MiB body passed it whole (measured). This filter caps what any request may hold.
    return {
        "name": _BUFFER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": MAX_REQUEST_BODY_BYTES,
        },
    }


def _header_mutation() -> dict[str, Any]:
    # Placed before the transcoder, so on the way back it runs after the transcoder has
    # turned the gRPC status into an HTTP status and a JSON body.
    removals = [{"remove": name} for name in GRPC_RESPONSE_HEADERS]
    return {
        "name": _HEADER_MUTATION,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3"
            ".HeaderMutation",
            # Trailers are kept: an HTTP/1.1 client never sees them, and an HTTP/2 client
            # learns from `grpc-status` there that a stream failed midway.
            "mutations": {"response_mutations": removals},
        },
    }


def _status_below(code: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": "LE",
                "value": {
                    "default_value": code - 1,
                    "runtime_key": "gateway.local_reply.keep_body_below_status",
                },
            }
        }
    }


def _local_reply_config(rate_limit_per_minute: int) -> dict[str, Any]:
    body = {"text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"}}
    too_many = (f"too many requests for this API key: at most {rate_limit_per_minute} per "
                "minute; retry after the time in x-ratelimit-reset")
    return {
        "mappers": [
            {
                "filter": {"status_code_filter": {"comparison": {
                    "op": "EQ",
                    "value": {"default_value": 429,
                              "runtime_key": "gateway.local_reply.rate_limited"}}}},
                "body_format_override": {
                    "json_format": {"code": 429, "message": too_many},
                    "content_type": "application/json",
                },
            },
            # A direct response that is not an error (`/healthz`) is already JSON: keep it.
            {
                "filter": _status_below(400),
                "body_format_override": {**body, "content_type": "application/json"},
            },
        ],
        "body_format": {
            "json_format": {"code": "%RESPONSE_CODE%", "message": "%LOCAL_REPLY_BODY%"},
            "content_type": "application/json",
        },
    }


def _duration(seconds: float) -> str:
    """`seconds` as an Envoy duration (`60s`, `0.5s`; never exponent notation)."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _setting_default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class GatewayProtections:
    """The gateway's limits and TLS (the `MIPRO_GATEWAY_*` settings of the same names)."""

    #: Seconds a client may take to send a request's headers.
    request_headers_timeout_seconds: float = _setting_default(
        "gateway_request_headers_timeout_seconds")
    #: Seconds a request may move no data before it is closed (event streams exempt).
    stream_idle_timeout_seconds: float = _setting_default("gateway_stream_idle_timeout_seconds")
    #: Job-API requests per minute per API key, bursts included.
    rate_limit_per_minute: int = _setting_default("gateway_rate_limit_per_minute")
    #: The largest body the `/v1/` interceptor route accepts.
    interceptor_max_body_bytes: int = _setting_default("gateway_interceptor_max_body_bytes")
    #: Whether gRPC reflection and health checking answer through the gateway.
    expose_grpc_introspection: bool = False
    #: PEM certificate chain and private key; both set, the listener speaks TLS.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("MIPRO_GATEWAY_TLS_CERT_FILE and MIPRO_GATEWAY_TLS_KEY_FILE must "
                             "be set together")

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayProtections:
        cert, key = settings.gateway_tls_cert_file, settings.gateway_tls_key_file
        return cls(
            request_headers_timeout_seconds=settings.gateway_request_headers_timeout_seconds,
            stream_idle_timeout_seconds=settings.gateway_stream_idle_timeout_seconds,
            rate_limit_per_minute=settings.gateway_rate_limit_per_minute,
            interceptor_max_body_bytes=settings.gateway_interceptor_max_body_bytes,
            expose_grpc_introspection=settings.gateway_expose_grpc_introspection,
            tls_cert_file=str(cert.resolve()) if cert else None,
            tls_key_file=str(key.resolve()) if key else None)


def _rate_limit(per_minute: int) -> dict[str, Any]:
    """One token bucket per distinct API-key header value (a wildcard descriptor)."""
    bucket = {"max_tokens": per_minute, "tokens_per_fill": per_minute, "fill_interval": "60s"}
    return {
        "name": _RATE_LIMIT,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3"
            ".LocalRateLimit",
            "stat_prefix": "gateway_rate_limit",
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
                               "runtime_key": "gateway.rate_limit.enabled"},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
                                "runtime_key": "gateway.rate_limit.enforced"},
            # Requests that carry no key header share this bucket.
            "token_bucket": bucket,
            "descriptors": [
                {"entries": [{"key": header}], "token_bucket": bucket}
                for header in RATE_LIMIT_HEADERS
            ],
            "always_consume_default_token_bucket": False,
            "max_dynamic_descriptors": 10000,
            "rate_limits": [
                {"actions": [{"request_headers": {"header_name": header,
                                                  "descriptor_key": header}}]}
                for header in RATE_LIMIT_HEADERS
            ],
            "rate_limited_as_resource_exhausted": True,
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        },
    }


def _tls_transport_socket(cert_file: str, key_file: str) -> dict[str, Any]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
            ".DownstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": cert_file},
                                      "private_key": {"filename": key_file}}],
                "alpn_protocols": ["h2", "http/1.1"],
            },
        },
    }


def _grpc_routes(*, expose_introspection: bool) -> list[dict[str, Any]]:
    """Native gRPC (h2c, `content-type: application/grpc*`), passed through untouched, for the
    public services only."""
    # Its clients need the `grpc-*` headers, set their own deadline (`grpc-timeout`), and
    # the server enforces its own message size limit. Routes are chosen on the request as it
    # arrived (`match_incoming_request_route`), before the transcoder rewrites a REST call
    # into gRPC, so REST calls never match here.
    untouched = {_HEADER_MUTATION: _DISABLED, _BUFFER: _DISABLED, _TRANSCODER: _DISABLED}
    passthrough = {"cluster": _ORCHESTRATOR_CLUSTER, "timeout": "0s",
                   "max_stream_duration": {"grpc_timeout_header_max": "0s"}}
    routes: list[dict[str, Any]] = [{
        # The live event stream may be silent for minutes: no idle limit.
        "name": "grpc_event_stream",
        "match": {"path": f"/{SERVICES[0]}/StreamJobEvents", "grpc": {}},
        "route": {**passthrough, "idle_timeout": "0s"},
        "typed_per_filter_config": untouched,
    }]
    prefixes = [f"/{service}/" for service in SERVICES]
    if expose_introspection:
        prefixes += INTROSPECTION_PREFIXES
    routes += [{
        "name": "grpc_" + prefix.strip("/").rstrip("."),
        "match": {"prefix": prefix, "grpc": {}},
        "route": passthrough,
        "typed_per_filter_config": untouched,
    } for prefix in prefixes]
    routes.append({
        # Any other gRPC method (reflection, health, the proposer's, unknown ones): refused
        # here, never forwarded. Envoy answers a gRPC caller with grpc-status 7.
        "name": "grpc_refused",
        "match": {"prefix": "/", "grpc": {}},
        "direct_response": {"status": 403, "body": {
            "inline_string": "this gRPC service is not served through the gateway"}},
        "typed_per_filter_config": {_HEADER_MUTATION: _DISABLED, _TRANSCODER: _DISABLED,
                                    _RATE_LIMIT: _DISABLED},
    })
    return routes


def _healthz_route(disabled_filters: tuple[str, ...]) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": "healthz",
        "match": {"path": "/healthz"},
        "direct_response": {"status": 200, "body": {"inline_string": '{"status":"ok"}'}},
    }
    if disabled_filters:
        route["typed_per_filter_config"] = dict.fromkeys(disabled_filters, _DISABLED)
    return route


def _interceptor_route(timeout_seconds: float, protections: GatewayProtections,
                       disabled_filters: tuple[str, ...]) -> dict[str, Any]:
    """The interceptor's OpenAI-compatible API (`/v1/{trial}/chat/completions`). A prefix
    match starts at the first byte, so `/api/v1/env-keys` is not caught here."""
    # Its bodies are buffered only up to their cap (413 beyond), never transcoded, and not
    # rate limited per API key (task apps carry no API key).
    body_cap = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
        "buffer": {"max_request_bytes": protections.interceptor_max_body_bytes},
    }
    return {
        "name": "interceptor",
        "match": {"prefix": "/v1/"},
        "route": {"cluster": _INTERCEPTOR_CLUSTER, "timeout": _duration(timeout_seconds)},
        "typed_per_filter_config": {**dict.fromkeys(disabled_filters, _DISABLED),
                                    _BUFFER: body_cap},
    }


def _routes(*, api_timeout_seconds: float, interceptor_timeout_seconds: float,
            protections: GatewayProtections) -> list[dict[str, Any]]:
    api_only = (_TRANSCODER, _RATE_LIMIT)
    return [
        *_grpc_routes(expose_introspection=protections.expose_grpc_introspection),
        _healthz_route(api_only),
        _interceptor_route(interceptor_timeout_seconds, protections, api_only),
        {
            # A live stream lasts as long as its job: no overall or idle limit. A client that
            # goes away resets the upstream stream; a dead orchestrator is found by keepalive.
            "name": "event_stream",
            "match": {"safe_regex": {"regex": EVENT_STREAM_PATH_REGEX}},
            "route": {"cluster": _ORCHESTRATOR_CLUSTER, "timeout": "0s", "idle_timeout": "0s"},
        },
        {
            # Every other REST path of the API, and native gRPC (h2c) calls.
            "name": "api",
            "match": {"prefix": "/"},
            "route": {"cluster": _ORCHESTRATOR_CLUSTER, "timeout": _duration(api_timeout_seconds)},
        },
    ]


def _sse_event_stream_route(descriptor_path: str) -> dict[str, Any]:
    """The live stream for a client that accepts `text/event-stream`: SSE, not NDJSON.

    Its transcoder lists only `SynthEventStreamService`, whose RPC streams `google.api.HttpBody`
    frames the orchestrator writes itself (`data: <json>` blocks, then `data: [DONE]`).
    """
    return {
        "name": "event_stream_sse",
        "match": {
            "safe_regex": {"regex": EVENT_STREAM_PATH_REGEX},
            "headers": [{"name": "accept",
                         "string_match": {"contains": "text/event-stream"}}],
        },
        "route": {"cluster": _ORCHESTRATOR_CLUSTER, "timeout": "0s", "idle_timeout": "0s"},
        "typed_per_filter_config": {
            _TRANSCODER: _transcoder(descriptor_path, SSE_SERVICES)["typed_config"],
        },
    }


def build_envoy_config(
    *,
    listen_host: str,
    listen_port: int,
    admin_host: str,
    admin_port: int,
    orchestrator_grpc: tuple[str, int],
    interceptor_http: tuple[str, int],
    descriptor_path: str,
    api_timeout_seconds: float = API_TIMEOUT_SECONDS,
    interceptor_timeout_seconds: float = INTERCEPTOR_TIMEOUT_SECONDS,
    protections: GatewayProtections | None = None,
    metrics_port: int | None = None,
) -> dict[str, Any]:
    """Returns the Envoy bootstrap as a dict; `descriptor_path` is relative to Envoy's cwd.
    With `metrics_port`, a listener there serves only Envoy's Prometheus stats."""
    protections = protections or GatewayProtections()
    routes = _routes(api_timeout_seconds=api_timeout_seconds,
                     interceptor_timeout_seconds=interceptor_timeout_seconds,
                     protections=protections)
    ndjson_stream = next(i for i, r in enumerate(routes) if r["name"] == "event_stream")
    routes.insert(ndjson_stream, _sse_event_stream_route(descriptor_path))
    hcm = _http_connection_manager("gateway", routes, [
        _header_mutation(),
        _rate_limit(protections.rate_limit_per_minute),
        _buffer(),
        _transcoder(descriptor_path),
    ], protections)
    config = _bootstrap(admin_host, admin_port, listen_host, listen_port, hcm, protections, [
        _orchestrator_cluster(*orchestrator_grpc),
        _cluster(_INTERCEPTOR_CLUSTER, *interceptor_http, http2=False),
    ])
    if metrics_port is not None:
        resources = config["static_resources"]
        resources["listeners"].append(_metrics_listener(listen_host, metrics_port))
        resources["clusters"].append(_cluster(_ADMIN_CLUSTER, admin_host, admin_port,
                                              http2=False))
    return config


def build_inference_gateway_config(
    *,
    listen_host: str,
    listen_port: int,
    admin_host: str,
    admin_port: int,
    interceptor_http: tuple[str, int],
    interceptor_timeout_seconds: float = INTERCEPTOR_TIMEOUT_SECONDS,
    protections: GatewayProtections | None = None,
) -> dict[str, Any]:
    """The Envoy bootstrap of the inference gateway: the gateway's `/v1/` route to the
    interceptor and `/healthz`, with the same protections, and nothing of the job API.

    It carries the task apps' model calls in a process of its own. On one host, a gateway
    that carries them as well answers the API only when its workers get a CPU back, behind
    hundreds of model calls a second: GetJob's p99 with 20 jobs running was 45-63 ms through
    one gateway, 29-33 ms with this one beside it (BENCHMARKS.md)."""
    protections = protections or GatewayProtections()
    routes = [_healthz_route(()),
              _interceptor_route(interceptor_timeout_seconds, protections, ()),
              {"name": "not_served", "match": {"prefix": "/"},
               "direct_response": {"status": 404, "body": {"inline_string": (
                   "the inference gateway serves only task apps' model calls (/v1/...); the "
                   "job API is on the gateway")}}}]
    hcm = _http_connection_manager("inference_gateway", routes, [_buffer()], protections)
    return _bootstrap(admin_host, admin_port, listen_host, listen_port, hcm, protections,
                      [_cluster(_INTERCEPTOR_CLUSTER, *interceptor_http, http2=False)])


def _http_connection_manager(name: str, routes: list[dict[str, Any]],
                             filters: list[dict[str, Any]],
                             protections: GatewayProtections) -> dict[str, Any]:
    """A listener's HTTP connection manager: `routes`, then `filters` and the router."""
    router = {
        "name": _ROUTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "AUTO",
        "use_remote_address": True,
        "normalize_path": True,
        "request_headers_timeout": _duration(protections.request_headers_timeout_seconds),
        "stream_idle_timeout": _duration(protections.stream_idle_timeout_seconds),
        "route_config": {
            "name": name,
            "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}],
        },
        "http_filters": [*filters, router],
        "local_reply_config": _local_reply_config(protections.rate_limit_per_minute),
    }


def _bootstrap(admin_host: str, admin_port: int, listen_host: str, listen_port: int,
               hcm: dict[str, Any], protections: GatewayProtections,
               clusters: list[dict[str, Any]]) -> dict[str, Any]:
    """One listener (`hcm`, TLS when configured), its clusters, the admin interface and the
    cap on downstream connections."""
    return {
        "admin": {"address": _socket_address(admin_host, admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": hcm["stat_prefix"],
                    "address": _socket_address(listen_host, listen_port),
                    "filter_chains": [_filter_chain(hcm, protections)],
                }
            ],
            "clusters": clusters,
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors"
                        ".downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 10000,
                    },
                }
            ]
        },
    }


def _metrics_listener(host: str, port: int) -> dict[str, Any]:
    """A listener whose only routes are Envoy's Prometheus stats, from the admin interface."""
    stats = "/stats/prometheus"
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "metrics",
        "codec_type": "AUTO",
        "route_config": {
            "name": "metrics",
            "virtual_hosts": [{"name": "metrics", "domains": ["*"], "routes": [
                {"match": {"path": stats}, "route": {"cluster": _ADMIN_CLUSTER}},
                {"match": {"path": "/metrics"},
                 "route": {"cluster": _ADMIN_CLUSTER, "prefix_rewrite": stats}},
            ]}],
        },
        "http_filters": [{
            "name": _ROUTER,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }],
    }
    return {
        "name": "metrics",
        "address": _socket_address(host, port),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


def _filter_chain(hcm: dict[str, Any], protections: GatewayProtections) -> dict[str, Any]:
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager",
                     "typed_config": hcm}],
    }
    if protections.tls_cert_file and protections.tls_key_file:
        chain["transport_socket"] = _tls_transport_socket(protections.tls_cert_file,
                                                          protections.tls_key_file)
    return chain


def render_envoy_yaml(*, header: str | None = None, **kwargs: Any) -> str:
    """Renders `build_envoy_config(**kwargs)` as YAML, after `header` as `#` comment lines."""
    return _yaml(build_envoy_config(**kwargs), header)


def render_inference_gateway_yaml(*, header: str | None = None, **kwargs: Any) -> str:
    """Renders `build_inference_gateway_config(**kwargs)` as YAML, after `header`."""
    return _yaml(build_inference_gateway_config(**kwargs), header)


def _yaml(config: dict[str, Any], header: str | None) -> str:
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    if header is None:
        return body
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comment + body


def _generated(purpose: str) -> str:
    """The header comment of a committed rendering."""
    return ("Generated by `python -m gateway.config` from gateway/config.py; do not edit.\n"
            + purpose)


@dataclass(frozen=True)
class Rendering:
    """One committed rendering of the gateway's config: where it lives and what it is built
    from."""

    path: Path
    purpose: str
    listen_host: str
    orchestrator_grpc: tuple[str, int]
    interceptor_http: tuple[str, int]
    descriptor_path: str
    listen_port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    metrics_port: int | None = RENDERED_METRICS_PORT

    def render(self) -> str:
        return render_envoy_yaml(
            header=_generated(self.purpose),
            listen_host=self.listen_host,
            listen_port=self.listen_port,
            admin_host=self.admin_host,
            admin_port=self.admin_port,
            orchestrator_grpc=self.orchestrator_grpc,
            interceptor_http=self.interceptor_http,
            descriptor_path=self.descriptor_path,
            metrics_port=self.metrics_port,
        )


@dataclass(frozen=True)
class InferenceRendering:
    """One committed rendering of the inference gateway's config."""

    path: Path
    purpose: str
    listen_host: str
    interceptor_http: tuple[str, int]
    listen_port: int = 8082
    admin_host: str = "127.0.0.1"
    admin_port: int = 9903

    def render(self) -> str:
        return render_inference_gateway_yaml(
            header=_generated(self.purpose), listen_host=self.listen_host,
            listen_port=self.listen_port, admin_host=self.admin_host,
            admin_port=self.admin_port, interceptor_http=self.interceptor_http)


RENDERINGS: tuple[Rendering | InferenceRendering, ...] = (
    Rendering(
        path=REPO_ROOT / "gateway" / "envoy.yaml",
        purpose="Local development; run from the repository root:\n"
        "  envoy --disable-hot-restart -c gateway/envoy.yaml",
        listen_host="127.0.0.1",
        orchestrator_grpc=("127.0.0.1", 50051),
        interceptor_http=("127.0.0.1", 8081),
        descriptor_path="gateway/mipro_v1.pb",
    ),
    Rendering(
        path=REPO_ROOT / "gateway" / "envoy.compose.yaml",
        purpose="docker-compose: the `gateway` service in front of the `orchestrator` service.",
        listen_host="0.0.0.0",
        orchestrator_grpc=("orchestrator", 50051),
        interceptor_http=("orchestrator", 8081),
        descriptor_path="/etc/mipro-gateway/mipro_v1.pb",
    ),
    InferenceRendering(
        path=REPO_ROOT / "gateway" / "envoy.inference.compose.yaml",
        purpose="docker-compose: the `inference-gateway` service, the task apps' model calls to\n"
        "the `orchestrator` service's interceptor.",
        listen_host="0.0.0.0",
        interceptor_http=("orchestrator", 8081),
    ),
    Rendering(
        path=K8S_GATEWAY_DIR / "envoy.yaml",
        purpose="Kubernetes (deploy/k8s): the gateway Deployment in front of the `mipro-api` and\n"
        "`mipro-interceptor` Services; mounted from the `mipro-gateway` ConfigMap.",
        listen_host="0.0.0.0",
        orchestrator_grpc=("mipro-api", 50051),
        interceptor_http=("mipro-interceptor", 8081),
        descriptor_path="/etc/mipro-gateway/mipro_v1.pb",
    ),
    InferenceRendering(
        path=K8S_INFERENCE_GATEWAY_DIR / "envoy.yaml",
        purpose="Kubernetes (deploy/k8s): the `mipro-inference-gateway` Deployment, the task\n"
        "apps' model calls to the `mipro-interceptor` Service; mounted from the ConfigMap of\n"
        "its name.",
        listen_host="0.0.0.0",
        interceptor_http=("mipro-interceptor", 8081),
    ),
)

#: Files kustomize puts in a ConfigMap: it reads only files below the kustomization, so the
#: descriptor is copied there (and `--check` fails when the copy differs from the source).
COPIES = ((REPO_ROOT / "gateway" / "mipro_v1.pb", K8S_GATEWAY_DIR / "mipro_v1.pb"),)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Renders the gateway's Envoy configs.")
    parser.add_argument("--check", action="store_true", help="fail if a rendering is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = [
            str(r.path.relative_to(REPO_ROOT))
            for r in RENDERINGS
            if not r.path.exists() or r.path.read_text() != r.render()
        ] + [
            str(copy.relative_to(REPO_ROOT))
            for source, copy in COPIES
            if not copy.exists() or copy.read_bytes() != source.read_bytes()
        ]
        if stale:
            print("stale Envoy configs (run `python -m gateway.config`): " + ", ".join(stale))
            return 1
        print("Envoy configs are up to date")
        return 0
    for rendering in RENDERINGS:
        rendering.path.parent.mkdir(parents=True, exist_ok=True)
        rendering.path.write_text(rendering.render())
        print(f"wrote {rendering.path.relative_to(REPO_ROOT)}")
    for source, copy in COPIES:
        copy.write_bytes(source.read_bytes())
        print(f"wrote {copy.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
