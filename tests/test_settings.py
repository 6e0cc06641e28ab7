"""The one settings object: its defaults, how the environment sets it, and errors that name
the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mipro._settings import Settings, SettingsError, variable_name

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.host, s.gateway_port, s.orchestrator_port, s.proposer_port) == (
        "127.0.0.1", 8080, 50051, 50061)
    assert s.proposer_address == "127.0.0.1:50061"
    # Task apps reach the interceptor through the inference gateway.
    assert (s.inference_gateway, s.inference_gateway_port,
            s.inference_gateway_admin_port) == (True, 8082, 9903)
    assert s.public_base_url == "http://127.0.0.1:8082"
    assert s.data_dir == Path(".mipro") and s.database_path == Path(".mipro/mipro.db")
    assert s.api_keys == () and s.max_running_jobs == 4 and s.prices_file is None
    assert (s.log_level, s.log_format) == ("info", "auto")
    # Today's timeouts, retry counts and intervals.
    assert (s.provider_timeout_seconds, s.provider_connect_timeout_seconds,
            s.provider_max_retries) == (120, 10, 3)
    assert (s.task_app_timeout_seconds, s.task_app_retry_attempts,
            s.task_app_retry_initial_backoff_seconds,
            s.task_app_retry_max_backoff_seconds) == (10, 3, 0.5, 20)
    assert (s.proposer_deadline_seconds, s.proposer_retry_attempts,
            s.proposer_retry_initial_backoff_seconds,
            s.proposer_retry_max_backoff_seconds) == (300, 5, 1, 10)
    assert (s.shutdown_grace_seconds, s.event_stream_poll_seconds, s.summary_flush_ms) == (
        5, 5, 250)
    assert (s.stack_ready_timeout_seconds, s.local_model_ready_timeout_seconds,
            s.stack_stop_grace_seconds) == (30, 120, 10)
    assert (s.gateway_api_timeout_seconds, s.gateway_interceptor_timeout_seconds) == (60, 300)


def test_the_public_base_url_follows_the_gateway_that_carries_model_calls() -> None:
    assert Settings.from_env({"MIPRO_GATEWAY_HOST": "10.0.0.5",
                              "MIPRO_INFERENCE_GATEWAY_PORT": "7000"}
                             ).public_base_url == "http://10.0.0.5:7000"
    one = Settings.from_env({"MIPRO_INFERENCE_GATEWAY": "false", "MIPRO_GATEWAY_PORT": "9000"})
    assert (one.inference_gateway, one.public_base_url) == (False, "http://127.0.0.1:9000")
    explicit = Settings.from_env({"MIPRO_PUBLIC_BASE_URL": "https://mipro.example.com/"})
    assert explicit.public_base_url == "https://mipro.example.com"
    with pytest.raises(SettingsError, match="MIPRO_INFERENCE_GATEWAY"):
        Settings.from_env({"MIPRO_INFERENCE_GATEWAY": "sometimes"})


def test_the_environment_sets_each_field() -> None:
    s = Settings.from_env({
        "MIPRO_HOST": "0.0.0.0", "MIPRO_GATEWAY_PORT": "9000", "MIPRO_PROPOSER_PORT": "6000",
        "MIPRO_API_KEYS": " mk_a, mk_b ,,", "MIPRO_LOG_LEVEL": "DEBUG",
        "MIPRO_LOG_FORMAT": "Json", "MIPRO_DATA_DIR": "/tmp/mipro-data",
        "MIPRO_PRICES_FILE": "prices.json", "MIPRO_PROVIDER_MAX_RETRIES": "0",
        "MIPRO_PROPOSER_DEADLINE_SECONDS": "12.5", "MIPRO_SUMMARY_FLUSH_MS": "1000",
        "MIPRO_TASK_APP_RETRY_ATTEMPTS": "1",
    })
    assert s.host == "0.0.0.0" and s.gateway_port == 9000
    # The derived addresses follow the host and ports they are built from.
    assert s.proposer_address == "0.0.0.0:6000"
    assert s.public_base_url == "http://0.0.0.0:8082"
    assert s.api_keys == ("mk_a", "mk_b")
    assert (s.log_level, s.log_format) == ("debug", "json")
    assert s.data_dir == Path("/tmp/mipro-data") and s.prices_file == Path("prices.json")
    assert s.provider_max_retries == 0 and s.proposer_deadline_seconds == 12.5
    assert s.summary_flush_ms == 1000
    assert s.task_app_retry_policy.max_attempts == 1


def test_explicit_addresses_win_and_empty_means_unset() -> None:
    s = Settings.from_env({"MIPRO_PROPOSER_ADDRESS": "proposer:50061",
                           "MIPRO_PUBLIC_BASE_URL": "https://mipro.example/",
                           "MIPRO_HOST": "", "MIPRO_GATEWAY_PORT": ""})
    assert s.proposer_address == "proposer:50061"
    assert s.public_base_url == "https://mipro.example"
    assert s.host == "127.0.0.1" and s.gateway_port == 8080


def test_from_env_reads_only_the_mapping_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIPRO_GATEWAY_PORT", "9999")
    assert Settings.from_env({}).gateway_port == 8080
    assert Settings.from_env().gateway_port == 9999


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("MIPRO_GATEWAY_PORT", "eighty", "must be a port number (0-65535), got 'eighty'"),
    ("MIPRO_PROPOSER_PORT", "70000", "must be a port number (0-65535), got '70000'"),
    ("MIPRO_MAX_RUNNING_JOBS", "0", "must be a whole number, at least 1, got '0'"),
    ("MIPRO_LOG_FORMAT", "xml", "must be json, console or auto"),
    ("MIPRO_LOG_LEVEL", "loud", "must be debug, info, warning or error"),
    ("MIPRO_PROVIDER_TIMEOUT_SECONDS", "-1", "must be a number of seconds above 0, got '-1'"),
    ("MIPRO_PROVIDER_TIMEOUT_SECONDS", "nan", "must be a number of seconds above 0"),
    ("MIPRO_PROVIDER_MAX_RETRIES", "2.5", "must be a whole number of retries (0-10)"),
    ("MIPRO_PROPOSER_RETRY_ATTEMPTS", "8", "must be a whole number of attempts (1-5)"),
    ("MIPRO_TASK_APP_RETRY_ATTEMPTS", "0", "must be a whole number of attempts (1-10)"),
    ("MIPRO_SUMMARY_FLUSH_MS", "0", "must be a whole number of milliseconds, at least 1"),
])
def test_a_bad_value_names_the_variable(variable: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value).startswith(f"{variable} {words}")


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(ValidationError):
        s.gateway_port = 1  # type: ignore[misc]
    assert s == Settings.from_env({}) and hash(s) == hash(Settings.from_env({}))


def test_the_readme_table_lists_every_setting_with_its_default() -> None:
    table = README.read_text().split("## Settings (environment)", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[2].strip()
            for line in table.splitlines() if line.startswith("| `MIPRO_")}
    defaults = Settings.from_env({})
    derived = {"proposer_address", "public_base_url", "api_keys", "data_dir", "prices_file",
               "api_key_pepper", "secrets_key", "secrets_key_previous"}
    # Fallbacks, secrets made per run, flags and optional files, shown in words.
    derived |= {"gateway_host", "orchestrator_host", "interceptor_host", "proposer_host",
                "proposer_token", "gateway_expose_grpc_introspection", "gateway_tls_cert_file",
                "gateway_tls_key_file"}
    derived |= {"database_url"}  # the data directory's SQLite file
    derived |= {"task_app_allow", "interceptor_token_key"}  # unset by default
    derived |= {"metrics_host", "metrics_port", "proposer_metrics_port", "gateway_metrics_port",
                "metrics_models", "tracing"}  # unset by default: no endpoint, no traces
    derived |= {"roles", "temporal_address"}  # a list, and unset by default
    for name in Settings.model_fields:
        variable = variable_name(name)
        assert variable in rows, f"{variable} is missing from the README's settings table"
        if name not in derived:
            default = getattr(defaults, name)
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert rows[variable].strip("`") == shown, (variable, rows[variable], default)


def test_roles_default_to_the_all_in_one_process() -> None:
    settings = Settings.from_env({})
    assert settings.roles == ("api", "worker", "interceptor") and settings.all_in_one
    split = Settings.from_env({"MIPRO_ROLES": " Worker , api,worker",
                               "MIPRO_TEMPORAL_ADDRESS": "127.0.0.1:7233",
                               "MIPRO_INTERCEPTOR_TOKEN_KEY": "k" * 32})
    assert split.roles == ("worker", "api") and not split.all_in_one


@pytest.mark.parametrize(("env", "named"), [
    ({"MIPRO_ROLES": "api,scheduler"}, "MIPRO_ROLES must be a comma-separated list"),
    ({"MIPRO_ROLES": "api", "MIPRO_INTERCEPTOR_TOKEN_KEY": "k" * 32},
     "MIPRO_ROLES: without MIPRO_TEMPORAL_ADDRESS the api and worker roles run together"),
    ({"MIPRO_ROLES": "api,worker",
      "MIPRO_SECRETS_KEY": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM="},
     "MIPRO_INTERCEPTOR_TOKEN_KEY is required"),
    ({"MIPRO_TEMPORAL_ADDRESS": "127.0.0.1:7233"}, "MIPRO_INTERCEPTOR_TOKEN_KEY is required"),
])
def test_roles_that_cannot_work_are_refused_naming_the_setting(env: dict[str, str],
                                                               named: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert named in str(raised.value)
    assert "c2VjcmV0" not in str(raised.value)  # a rule across settings never echoes them
