"""The one redactor, on the shapes task apps and providers really answer with."""

from __future__ import annotations

import json
import secrets

from orchestrator._redact import REDACTED, Redactor


def _banking77_400(expected_key: str, sent_key: str) -> str:
    """The synth-ai 0.2.24 Banking77 task app's answer to a wrong environment key."""
    return json.dumps({"detail": {"error": {
        "code": "unauthorised", "message": "API key missing or invalid",
        "allowed_first15": [expected_key[:15]], "allowed_count": 1,
        "got_first15": [sent_key[:15]], "got_lens": [len(sent_key)]}}})


def test_banking77_rejection_keeps_the_reason_and_loses_both_key_prefixes() -> None:
    expected = "sk_env_" + secrets.token_hex(12)  # the task app's own key: unknown to us
    sent = "env_" + secrets.token_hex(10)  # the job's registered key
    body = _banking77_400(expected, sent)
    redacted = Redactor([sent]).redact(body)
    assert expected[:15] not in redacted
    assert sent[:15] not in redacted and sent[:6] not in redacted
    assert "API key missing or invalid" in redacted and "unauthorised" in redacted
    assert json.loads(redacted)["detail"]["error"]["allowed_first15"] == [REDACTED]
    assert json.loads(redacted)["detail"]["error"]["got_lens"] == [len(sent)]


def test_any_six_character_piece_of_a_known_key_is_removed() -> None:
    key = "envkey-" + secrets.token_urlsafe(18)
    redactor = Redactor([key])
    for start, size in ((0, 6), (3, 9), (len(key) - 6, 6), (0, len(key))):
        piece = key[start:start + size]
        redacted = redactor.redact(f"the app said: expected {piece}!")
        assert piece not in redacted
        assert redacted.startswith("the app said: expected ") and redacted.endswith("!")
    short = key[:5]
    assert Redactor([key]).redact(f"x {short} y") == f"x {short} y"  # 5 characters stay


_BASE64 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkw"


def test_bearer_tokens_secret_fields_and_key_shapes_are_removed() -> None:
    samples = {
        "Authorization: Bearer abc.def-123_456": "abc.def-123_456",
        "bad key sk-proj-" + "A1b2C3d4E5f6G7h8": "sk-proj-A1b2C3d4E5f6G7h8",
        "GET /x?api_key=hunter2hunter2&x=1": "hunter2hunter2",
        '{"password": "correct horse"}': "correct horse",
        "id " + "0f" * 20: "0f" * 20,
        "blob " + _BASE64: _BASE64,
    }
    redactor = Redactor()
    for text, secret in samples.items():
        assert secret not in redactor.redact(text), text


def test_userinfo_in_urls_is_removed_and_plain_errors_stay_readable() -> None:
    redactor = Redactor(["not-in-this-text"])
    assert redactor.redact("GET https://alice:s3cret@example.com/health failed") == (
        f"GET https://{REDACTED}@example.com/health failed")
    plain = "task app at http://127.0.0.1:8000 failed its health check: 503 warming up"
    assert redactor.redact(plain) == plain
