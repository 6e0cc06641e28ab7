"""The `mipro` command: run the stack, run the offline demo, and talk to the job API.

    mipro up                 orchestrator + proposer service + Envoy gateway, in the foreground
    mipro demo               the stack + example task app + a model, one optimization, printed
    mipro jobs submit FILE   POST a job (JSON as in the API docs); also get, list, cancel, events
    mipro env-keys register  register the ENVIRONMENT_API_KEY sent to task apps
    mipro keys create|list|revoke, mipro tenants list|disable|enable
                             the operator's tenants and API keys, on the data directory's store
    mipro db upgrade|current the job store's schema version (MIPRO_DATABASE_URL)

Every job command talks REST to the gateway (`MIPRO_GATEWAY_URL`, default
`http://127.0.0.1:8080`) with the key in `MIPRO_API_KEY` (else the first of `MIPRO_API_KEYS`,
else the key `mipro up` saved in the data directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from orchestrator._tenants import load_pepper

from . import _admin, _db_cli
from ._live import LiveView, render_result
from ._providers import override_variables
from ._sealed_box import seal
from ._settings import Settings, SettingsError
from ._stack import Stack, StackError, dial_host, free_port, free_ports_env, stack_env

API_KEY_FILE = "api_key"
JOBS_PATH = "/api/policy-optimization/online/jobs"
#: The demo's example, package data (`examples/support_intents/` in a checkout).
EXAMPLE_DIR = files("mipro.examples.support_intents")
EXAMPLE_JOB = EXAMPLE_DIR / "job.json"
#: The demo's job on the real local model: small enough for a few minutes on 2 CPU cores.
LOCAL_MODEL_JOB = EXAMPLE_DIR / "job_local_model.json"
TERMINAL = ("succeeded", "failed", "cancelled")
TERMINAL_EVENTS = tuple(f"job.{status}" for status in TERMINAL)
#: Where the dev profile (`mipro up`, `mipro demo`) lets task apps be: this machine only.
DEV_TASK_APP_ALLOW = "loopback"


def _print(*parts: object) -> None:
    print(*parts, flush=True)


# -- settings and keys ------------------------------------------------------------------------

def _env_with_flags(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    for flag, variable in (
        ("gateway_port", "MIPRO_GATEWAY_PORT"), ("orchestrator_port", "MIPRO_ORCHESTRATOR_PORT"),
        ("proposer_port", "MIPRO_PROPOSER_PORT"), ("interceptor_port", "MIPRO_INTERCEPTOR_PORT"),
        ("admin_port", "MIPRO_GATEWAY_ADMIN_PORT"),
        ("inference_gateway_port", "MIPRO_INFERENCE_GATEWAY_PORT"),
        ("data_dir", "MIPRO_DATA_DIR"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            env[variable] = str(value)
    return env


def _saved_key_path(settings: Settings) -> Path:
    return settings.data_dir / API_KEY_FILE


def _new_api_key() -> str:
    return "mk_" + secrets.token_urlsafe(24)


def _client_api_key(settings: Settings) -> str:
    key = os.environ.get("MIPRO_API_KEY", "")
    if not key and settings.api_keys:
        key = settings.api_keys[0]
    if not key and _saved_key_path(settings).exists():
        key = _saved_key_path(settings).read_text().strip()
    if not key:
        raise SystemExit("no API key: set MIPRO_API_KEY (or run `mipro up`, which makes one)")
    return key


def _gateway_url(settings: Settings) -> str:
    return os.environ.get("MIPRO_GATEWAY_URL",
                          f"http://{dial_host(settings.gateway_host)}:{settings.gateway_port}")


# -- mipro up ---------------------------------------------------------------------------------

async def _wait_for_stop_signal(stack: Stack) -> str:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        exited = stack.first_exited()
        if exited is not None:
            return f"{exited.name} exited unexpectedly (code {exited.process.returncode})"  # type: ignore[union-attr]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
    return ""


async def _up(settings: Settings, env: dict[str, str]) -> int:
    stack = Stack(settings, env)
    try:
        _print("starting proposer service, orchestrator and gateway"
               + (" and inference gateway ..." if settings.inference_gateway else " ..."))
        await stack.start_core()
        _print(f"ready: REST at {stack.gateway_url}, gRPC at "
               f"{settings.orchestrator_host}:{settings.orchestrator_port}, task apps' model "
               f"calls at {settings.public_base_url}; data in {settings.data_dir}")
        _print("press Ctrl-C to stop")
        problem = await _wait_for_stop_signal(stack)
        if problem:
            _print(f"error: {problem}; stopping the rest")
            return 1
        _print("stopping ...")
        return 0
    except StackError as exc:
        _print(f"error: {exc}")
        return 1
    finally:
        await stack.stop()


def cmd_up(args: argparse.Namespace) -> int:
    env = _env_with_flags(args)
    env.setdefault("MIPRO_TASK_APP_ALLOW", DEV_TASK_APP_ALLOW)
    settings = Settings.from_env(env)
    if not settings.api_keys:
        key = _new_api_key()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path = _saved_key_path(settings)
        path.write_text(key + "\n")
        path.chmod(0o600)
        env["MIPRO_API_KEYS"] = key
        settings = Settings.from_env(env)
        _print(f"MIPRO_API_KEYS is unset; made an API key for this run: {key}")
        _print(f"(saved to {path}; `mipro jobs ...` reads it from there)")
    _pepper, made = load_pepper(settings)
    if made is not None:
        _print(f"MIPRO_API_KEY_PEPPER is unset; made one for stored API keys, saved to {made}")
    return asyncio.run(_up(settings, stack_env(settings, env)))


# -- mipro demo -------------------------------------------------------------------------------

def _demo_settings(args: argparse.Namespace) -> tuple[Settings, dict[str, str]]:
    env = _env_with_flags(args)
    for variable, port in free_ports_env().items():
        env.setdefault(variable, port)
    env.pop("MIPRO_PROPOSER_ADDRESS", None)
    env.pop("MIPRO_PUBLIC_BASE_URL", None)
    env["MIPRO_API_KEYS"] = _new_api_key()
    env.setdefault("MIPRO_DATA_DIR", str(Path(".mipro") / "demo"))
    env.setdefault("MIPRO_TASK_APP_ALLOW", DEV_TASK_APP_ALLOW)
    settings = Settings.from_env(env)
    return settings, stack_env(settings, env)


def _uses_real_openai(env: dict[str, str]) -> bool:
    return bool(env.get("OPENAI_API_KEY") or env.get("PROD_OPENAI_API_KEY")) and not (
        env.get("MIPRO_PROVIDER_OPENAI_BASE_URL") or env.get("OPENAI_BASE_URL"))


def _demo_model(args: argparse.Namespace, env: dict[str, str]) -> str:
    """The model the demo runs on: `url` with `--model-url`; `auto` is OpenAI when a key is
    set, else the local model."""
    if args.model_url:
        return "url"
    if args.model != "auto":
        return str(args.model)
    return "openai" if _uses_real_openai(env) else "local"


def _job_providers(job: dict[str, Any]) -> list[str]:
    """The provider names a job's policy and proposer use."""
    settings = job.get("policy_optimization", {})
    names = (settings.get("policy", {}).get("provider"),
             settings.get("mipro", {}).get("proposer", {}).get("provider"))
    return sorted({name for name in names if isinstance(name, str) and name})


async def _point_providers_at(stack: Stack, url: str, job: dict[str, Any]) -> str:
    """Points every provider `job` names at the OpenAI-compatible server `url`; returns what
    is wrong ("" when nothing is). A provider without a key of its own gets a placeholder,
    so no real provider's key (OPENAI_API_KEY) is ever sent to `url`."""
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            await client.get(f"{url}/models")
    except httpx.HTTPError as exc:
        return f"the model server at {url} does not answer ({type(exc).__name__}: {exc})"
    for name in _job_providers(job):
        base_url_variable, key_variable = override_variables(name)
        stack.env[base_url_variable] = url
        stack.env.setdefault(key_variable, "unused")
    return ""


async def _demo(settings: Settings, env: dict[str, str], args: argparse.Namespace) -> int:
    log_dir = settings.data_dir / "logs"
    stack = Stack(settings, env, log_dir=log_dir)
    if args.model_url and args.model != "auto":
        _print("error: --model-url names the model server; leave out --model")
        return 2
    model = _demo_model(args, env)
    default_job = LOCAL_MODEL_JOB if model == "local" else EXAMPLE_JOB
    job_file = Path(args.job) if args.job else default_job
    try:
        job = json.loads(job_file.read_text())
    except (OSError, ValueError) as exc:
        _print(f"error: cannot read the job file {job_file}: {exc}")
        return 2
    try:
        if model == "local":
            from .local_model import ModelUnavailable, require_llama_cpp, resolve_model_path

            try:
                require_llama_cpp()
                model_path = resolve_model_path(env=env)
            except ModelUnavailable as exc:
                _print(f"error: the local model cannot run: {exc}; or run the demo against an "
                       "OpenAI-compatible server with `mipro demo --model-url URL`")
                return 1
            _print(f"model: the REAL local model {model_path.name} (SmolLM2-135M-Instruct "
                   "unless MIPRO_LOCAL_MODEL_PATH says otherwise) through llama.cpp on the CPU; "
                   "a 135M-parameter model, so expect low scores (`--model-url URL` for another "
                   "OpenAI-compatible server, OPENAI_API_KEY for OpenAI)")
            model_url = await stack.start_local_model(free_port(), model_path=model_path)
            stack.env["MIPRO_PROVIDER_LOCAL_BASE_URL"] = model_url
            # Under a JSON grammar SmolLM2-135M writes identifiers, not sentences (README,
            # "The proposer"): its proposals are asked for in plain text.
            stack.env.setdefault("MIPRO_PROPOSER_STRUCTURED_OUTPUT", "false")
            _print(f"       at {model_url}")
        elif model == "url":
            url = args.model_url.rstrip("/")
            if problem := await _point_providers_at(stack, url, job):
                _print(f"error: {problem}")
                return 1
            _print(f"model: the OpenAI-compatible server at {url}, for the provider(s) "
                   f"{', '.join(_job_providers(job))} of the job")
        else:
            _print("model: OpenAI (OPENAI_API_KEY is set); this run is billed to that key")
        _print(f"job: {job_file}")
        environment_key = "env_" + secrets.token_urlsafe(16)
        task_app_url = await stack.start_task_app(free_port(), environment_key)
        _print(f"task app: the example support-intents app at {task_app_url}")
        await stack.start_core()
        _print(f"stack: gateway {stack.gateway_url}, logs in {log_dir}")
        job["policy_optimization"]["task_app_url"] = task_app_url
        return await _run_demo_job(stack.gateway_url, settings.api_keys[0], environment_key, job)
    except StackError as exc:
        _print(f"error: {exc}")
        return 1
    finally:
        await stack.stop()


async def _run_demo_job(gateway: str, api_key: str, environment_key: str,
                        job: dict[str, Any]) -> int:
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=30.0) as client:
        response = await client.post("/api/v1/env-keys",
                                     json={"name": "ENVIRONMENT_API_KEY", "value": environment_key})
        response.raise_for_status()
        response = await client.post(JOBS_PATH, json=job)
        if response.status_code != 200:
            _print(f"error: submit answered {response.status_code}: {response.text}")
            return 1
        job_id = response.json()["job_id"]
        _print(f"submitted job {job_id} (POST {JOBS_PATH}); live events:")
        await _follow_events(client, job_id)
        result = (await client.get(f"{JOBS_PATH}/{job_id}")).json()
    _print_result(result)
    return 0 if result.get("status") == "succeeded" else 1


def _console() -> Console:
    """Standard output for the live view and the result: animated on a terminal, plain lines
    elsewhere, 120 columns wide in a log unless COLUMNS says otherwise."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120
    return console


async def _job_settings(client: httpx.AsyncClient, job_id: str) -> dict[str, Any] | None:
    """The job's settings, which size the live view's bars; None if the job cannot be read
    (the event stream then says why)."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = await client.get(f"{JOBS_PATH}/{job_id}")
        if response.is_success:
            settings = response.json().get("policy_optimization")
            return settings if isinstance(settings, dict) else None
    return None


async def _follow_events(client: httpx.AsyncClient, job_id: str, since_seq: int = 0) -> bool:
    """Shows the job's events live, as a progress bar per phase (plain lines off a terminal),
    until its terminal one; a stream that ends early (e.g. a gateway connection dropped on a
    starved machine) is resumed after the last event seen. False when the stream answered an
    error, which is printed."""
    seq = since_seq
    with LiveView(_console(), settings=await _job_settings(client, job_id)) as view:
        while True:
            try:
                async with client.stream("GET", f"{JOBS_PATH}/{job_id}/events/stream",
                                         params={"since_seq": seq},
                                         timeout=httpx.Timeout(30.0, read=600.0)) as stream:
                    if stream.status_code != 200:
                        await stream.aread()
                        view.note(f"error: the event stream answered {stream.status_code}: "
                                  f"{stream.text[:300]}")
                        return False
                    async for line in stream.aiter_lines():
                        if line.strip():
                            view.handle(json.loads(line))
                            seq = max(seq, view.last_seq)
                            if view.finished:
                                return True
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
                view.note(f"(event stream interrupted: {type(exc).__name__})")
            view.note(f"(event stream ended early; resuming after event {seq})")
            await asyncio.sleep(1.0)


def _print_result(job: dict[str, Any]) -> None:
    render_result(job, _console())


def cmd_demo(args: argparse.Namespace) -> int:
    settings, env = _demo_settings(args)
    return asyncio.run(_demo(settings, env, args))


# -- mipro jobs / env-keys --------------------------------------------------------------------

def _api(settings: Settings) -> httpx.Client:
    return httpx.Client(base_url=_gateway_url(settings), timeout=30.0,
                        headers={"Authorization": f"Bearer {_client_api_key(settings)}"})


def _show(response: httpx.Response) -> int:
    try:
        _print(json.dumps(response.json(), indent=2))
    except ValueError:
        _print(response.text)
    return 0 if response.is_success else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    settings = Settings.from_env(_env_with_flags(args))
    with _api(settings) as api:
        if args.action == "submit":
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            return _show(api.post(JOBS_PATH, content=text,
                                  headers={"Content-Type": "application/json"}))
        if args.action == "get":
            return _show(api.get(f"{JOBS_PATH}/{args.job_id}"))
        if args.action == "list":
            params = {k: v for k, v in (("status", args.status), ("limit", args.limit),
                                        ("page_token", args.page_token)) if v}
            return _show(api.get(JOBS_PATH, params=params))
        if args.action == "cancel":
            return _show(api.post(f"{JOBS_PATH}/{args.job_id}/cancel",
                                  json={"reason": args.reason}))
        if args.action in ("pause", "resume"):
            body = {"reason": args.reason} if args.action == "pause" else {}
            return _show(api.post(f"{JOBS_PATH}/{args.job_id}:{args.action}", json=body))
        if args.action == "candidates":
            params = {k: v for k, v in (("page_size", args.page_size),
                                        ("page_token", args.page_token)) if v}
            return _show(api.get(f"{JOBS_PATH}/{args.job_id}/candidates", params=params))
        if args.follow:
            return asyncio.run(_follow_job(api, args.job_id, args.since_seq))
        return _show(api.get(f"{JOBS_PATH}/{args.job_id}/events",
                             params={"since_seq": args.since_seq, "limit": args.limit or 100}))


async def _follow_job(api: httpx.Client, job_id: str, since_seq: int) -> int:
    """`jobs events --follow`: the live view until the job ends, then its result."""
    async with httpx.AsyncClient(base_url=api.base_url, headers=api.headers,
                                 timeout=30.0) as client:
        if not await _follow_events(client, job_id, since_seq):
            return 1
        response = await client.get(f"{JOBS_PATH}/{job_id}")
    if not response.is_success:
        return _show(response)
    _print_result(response.json())
    return 0


def cmd_env_keys(args: argparse.Namespace) -> int:
    settings = Settings.from_env(_env_with_flags(args))
    value = args.value if args.value is not None else os.environ.get(args.name, "")
    if not value:
        raise SystemExit(f"no value: pass --value or set {args.name} in the environment")
    with _api(settings) as api:  # sealed on this machine: the value never crosses in clear
        public = api.get("/api/v1/crypto/public-key")
        if not public.is_success:
            return _show(public)
        sealed = seal(public.json()["public_key"], value)
        return _show(api.post("/api/v1/env-keys",
                              json={"name": args.name, "ciphertext_b64": sealed}))


def cmd_admin(args: argparse.Namespace) -> int:
    """`mipro keys ...` and `mipro tenants ...` (`_admin.py`)."""
    return asyncio.run(_admin.run(Settings.from_env(_env_with_flags(args)), args))


def cmd_db(args: argparse.Namespace) -> int:
    """`mipro db upgrade` and `mipro db current` (`_db_cli.py`)."""
    return asyncio.run(_db_cli.run(Settings.from_env(_env_with_flags(args)), args))


# -- parser -----------------------------------------------------------------------------------

def _add_data_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="job store directory (MIPRO_DATA_DIR, ./.mipro)")


def _add_port_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway-port", type=int, help="REST port (MIPRO_GATEWAY_PORT, 8080)")
    parser.add_argument("--orchestrator-port", type=int,
                        help="gRPC port (MIPRO_ORCHESTRATOR_PORT, 50051)")
    parser.add_argument("--proposer-port", type=int, help="MIPRO_PROPOSER_PORT, 50061")
    parser.add_argument("--interceptor-port", type=int, help="MIPRO_INTERCEPTOR_PORT, 8081")
    parser.add_argument("--admin-port", type=int, help="Envoy admin (MIPRO_GATEWAY_ADMIN_PORT)")
    parser.add_argument("--inference-gateway-port", type=int,
                        help="the task apps' model calls (MIPRO_INFERENCE_GATEWAY_PORT, 8082)")
    parser.add_argument("--data-dir", help="job store directory (MIPRO_DATA_DIR, ./.mipro)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mipro", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run orchestrator, proposer service and gateways")
    _add_port_flags(up)
    up.set_defaults(handler=cmd_up)

    demo = commands.add_parser("demo", help="run one optimization of the bundled example")
    _add_port_flags(demo)
    demo.add_argument("--model", choices=("auto", "local", "openai"), default="auto",
                      help="auto: OpenAI when OPENAI_API_KEY is set, else local (the real "
                           "SmolLM2-135M through llama.cpp, `make setup-local`)")
    demo.add_argument("--model-url", metavar="URL",
                      help="instead, an OpenAI-compatible server already running (vLLM, "
                           "Ollama, llama.cpp, ...) by its base URL, e.g. "
                           "http://127.0.0.1:8000/v1: every provider the job names is pointed "
                           "there, so the job's model names must be ones it serves")
    demo.add_argument("--job", metavar="FILE",
                      help="the job to run (JSON as in the API docs; its task_app_url is "
                           "replaced by the example app's); default: the bundled example's")
    demo.set_defaults(handler=cmd_demo)

    jobs = commands.add_parser("jobs", help="talk to the job API through the gateway")
    actions = jobs.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="create a job from a JSON file ('-' for stdin)")
    submit.add_argument("file")
    for name in ("get", "cancel", "events"):
        action = actions.add_parser(name)
        action.add_argument("job_id")
    actions.choices["cancel"].add_argument("--reason", default="")
    actions.choices["events"].add_argument("--since-seq", type=int, default=0)
    actions.choices["events"].add_argument("--limit", type=int, default=0)
    actions.choices["events"].add_argument("--follow", action="store_true",
                                           help="stream live until the job ends")
    for name, text in (("pause", "pause a job: no new rollouts, resumable"),
                       ("resume", "resume a paused job; nothing stored runs again"),
                       ("candidates", "a page of a job's candidates, by index")):
        actions.add_parser(name, help=text).add_argument("job_id")
    actions.choices["pause"].add_argument("--reason", default="")
    actions.choices["candidates"].add_argument("--page-size", type=int, default=0)
    actions.choices["candidates"].add_argument("--page-token", default="")
    listing = actions.add_parser("list")
    listing.add_argument("--status", default="")
    listing.add_argument("--limit", type=int, default=0)
    listing.add_argument("--page-token", default="")
    jobs.set_defaults(handler=cmd_jobs)

    env_keys = commands.add_parser("env-keys", help="manage environment keys")
    env_actions = env_keys.add_subparsers(dest="action", required=True)
    register = env_actions.add_parser("register", help="register a task-app environment key")
    register.add_argument("--name", default="ENVIRONMENT_API_KEY")
    register.add_argument("--value", help="the key (default: $ENVIRONMENT_API_KEY)")
    env_keys.set_defaults(handler=cmd_env_keys)

    _admin.add_parsers(commands, _add_data_dir_flag, cmd_admin)
    _db_cli.add_parsers(commands, _add_data_dir_flag, cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SettingsError as exc:
        _print(f"error: {exc}")
        return 2
    except httpx.ConnectError as exc:
        _print(f"error: cannot reach the gateway ({exc}); is `mipro up` running?")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
