"""How a provider name resolves to an endpoint and a key (`mipro._providers`)."""

from __future__ import annotations

import pytest

from mipro._providers import KEYLESS_PLACEHOLDER, ProviderError, resolve_provider


def test_a_base_url_override_alone_is_enough_for_a_keyless_server() -> None:
    env = {"MIPRO_PROVIDER_OPENAI_BASE_URL": "http://127.0.0.1:8091/v1/"}
    endpoint = resolve_provider("openai", env)
    assert endpoint.base_url == "http://127.0.0.1:8091/v1"
    assert endpoint.api_key == KEYLESS_PLACEHOLDER
    groq = resolve_provider("groq", {"MIPRO_PROVIDER_GROQ_BASE_URL": "http://vllm:8000/v1"})
    assert (groq.base_url, groq.api_key) == ("http://vllm:8000/v1", KEYLESS_PLACEHOLDER)
    # OPENAI_BASE_URL is a base URL override as well.
    local = resolve_provider("openai", {"OPENAI_BASE_URL": "http://ollama:11434/v1"})
    assert local.api_key == KEYLESS_PLACEHOLDER


@pytest.mark.parametrize(("name", "variables"), [
    ("openai", "OPENAI_API_KEY or PROD_OPENAI_API_KEY or MIPRO_PROVIDER_OPENAI_API_KEY"),
    ("groq", "GROQ_API_KEY or MIPRO_PROVIDER_GROQ_API_KEY"),
])
def test_the_builtin_endpoints_still_need_their_key(name: str, variables: str) -> None:
    with pytest.raises(ProviderError) as caught:
        resolve_provider(name, {})
    assert f"provider {name!r} has no API key: set {variables}" in str(caught.value)
    # Naming the built-in endpoint explicitly is no way around it.
    with pytest.raises(ProviderError):
        resolve_provider("openai", {"OPENAI_BASE_URL": "https://api.openai.com/v1/"})


def test_keys_are_found_in_their_usual_variables() -> None:
    assert resolve_provider("openai", {"OPENAI_API_KEY": "sk-a"}).api_key == "sk-a"
    assert resolve_provider("openai", {"PROD_OPENAI_API_KEY": "sk-p"}).api_key == "sk-p"
    assert resolve_provider("groq", {"GROQ_API_KEY": "gsk-g"}).api_key == "gsk-g"
    # A server behind OPENAI_BASE_URL gets OPENAI_API_KEY, as with the openai SDK itself.
    proxied = resolve_provider("openai", {"OPENAI_BASE_URL": "https://proxy.example/v1",
                                          "OPENAI_API_KEY": "sk-a"})
    assert (proxied.base_url, proxied.api_key) == ("https://proxy.example/v1", "sk-a")
    override = resolve_provider("openai", {"MIPRO_PROVIDER_OPENAI_BASE_URL": "http://m/v1",
                                           "MIPRO_PROVIDER_OPENAI_API_KEY": "mine",
                                           "OPENAI_API_KEY": "sk-a"})
    assert (override.base_url, override.api_key) == ("http://m/v1", "mine")
    assert "mine" not in repr(override)


def test_other_names_need_a_base_url() -> None:
    with pytest.raises(ProviderError, match="set MIPRO_PROVIDER_MY_VLLM_BASE_URL"):
        resolve_provider("my-vllm", {})
    endpoint = resolve_provider("my-vllm", {"MIPRO_PROVIDER_MY_VLLM_BASE_URL": "http://v/v1"})
    assert (endpoint.name, endpoint.api_key) == ("my-vllm", KEYLESS_PLACEHOLDER)
    with pytest.raises(ProviderError, match="not a valid provider name"):
        resolve_provider("Bad Name!", {})
