"""The one redactor: text quoted from a task app or a provider passes through it before it
reaches an event, `job.error`, a log line or a response.

`Redactor(secrets).redact(text)` removes, in this order:

- the values of JSON fields whose name says they hold a secret or a piece of one (`api_key`,
  `token`, `secret`, `password`, `authorization`, `allowed_first15`, `got_prefix`, ...),
  whatever the value is;
- every occurrence of a known secret (the job's environment key, the provider's API key) and
  of any substring of one that is `MIN_SECRET_FRAGMENT` characters or longer (a task app that
  echoes "the first 15 characters of the key it got" leaks a fragment, not the key);
- the values of `name=value` / `name: value` fields with such names;
- bearer/basic credentials, OpenAI-style keys (`sk-...`), and long hex or base64 runs that
  look like keys;
- userinfo in URLs (`https://user:pass@host` becomes `https://[redacted]@host`).

What was removed reads `[redacted]`, so an error still says what went wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
#: Substrings of a known secret this long or longer are removed.
MIN_SECRET_FRAGMENT = 6

_SECRET_NAME = (r"[A-Za-z0-9_\-]*(?:key|token(?!s)|secret|passw(?:or)?d|authori[sz]ation|credential"
                r"|cookie|signature|first\d+|last\d+|prefix|suffix)[A-Za-z0-9_\-]*")
_SECRET_KEY = re.compile(_SECRET_NAME, re.IGNORECASE)
#: `"api_key": "v"`, `"allowed_first15": ["v", ...]`, `'token': 'v'`.
_JSON_FIELD = re.compile(
    r"""(?P<name>["']""" + _SECRET_NAME + r"""["']\s*:\s*)"""
    r"""(?P<value>\[[^\]]*\]|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^,}\s]+)""",
    re.IGNORECASE)
#: `api_key=v`, `token: v` in query strings, headers and prose.
_PLAIN_FIELD = re.compile(r"(?P<name>\b" + _SECRET_NAME + r"\s*[=:]\s*)"
                          r"(?!\[redacted\])(?P<value>[^\s&,;\"'}\]]+)", re.IGNORECASE)
_SCHEME_CREDENTIAL = re.compile(r"\b(?P<name>bearer|basic)\s+(?P<value>[A-Za-z0-9._~+/\-]+=*)",
                                re.IGNORECASE)
_SHAPES = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),  # OpenAI-style keys (sk-..., sk-proj-...)
    re.compile(r"\b(?:gsk|xox[abprs]|ghp|gho|github_pat|hf|AKIA)[_\-]?[A-Za-z0-9_\-]{12,}"),
    re.compile(r"\b[0-9a-fA-F]{32,}\b"),  # long hex runs
    re.compile(r"(?<![A-Za-z0-9+/_\-])(?=[A-Za-z0-9+/_\-]*\d)(?=[A-Za-z0-9+/_\-]*[A-Za-z])"
               r"[A-Za-z0-9+/_\-]{32,}={0,2}"),  # long base64-ish runs with letters and digits
)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@]+@")


class Redactor:
    """Removes known secrets (and their fragments) and secret-shaped text from quoted text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        self._fragments = frozenset(
            s[i:i + MIN_SECRET_FRAGMENT] for s in self._secrets
            for i in range(len(s) - MIN_SECRET_FRAGMENT + 1))

    def with_secrets(self, *secrets: str) -> Redactor:
        """A redactor that also removes `secrets`."""
        return Redactor((*self._secrets, *secrets))

    def redact(self, text: str) -> str:
        if not text:
            return text
        text = _JSON_FIELD.sub(lambda m: m["name"] + _quoted(m["value"]), text)
        text = self._known(text)
        text = _SCHEME_CREDENTIAL.sub(lambda m: m["name"] + " " + REDACTED, text)
        text = _PLAIN_FIELD.sub(lambda m: m["name"] + REDACTED, text)
        for shape in _SHAPES:
            text = shape.sub(REDACTED, text)
        return _URL_USERINFO.sub(lambda m: m["scheme"] + REDACTED + "@", text)

    def redact_json(self, value: Any) -> Any:
        """`value` (parsed JSON) with every string redacted and the values of secret-named
        fields replaced."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self.redact_json(v) for v in value]
        if isinstance(value, dict):
            return {k: REDACTED if _SECRET_KEY.fullmatch(str(k)) else self.redact_json(v)
                    for k, v in value.items()}
        return value

    def _known(self, text: str) -> str:
        """`text` with every run made of a known secret's 6-character windows replaced; any
        substring of a secret of 6 or more characters is such a run."""
        if not self._fragments:
            return text
        size = MIN_SECRET_FRAGMENT
        covered = [False] * len(text)
        for start in range(len(text) - size + 1):
            if text[start:start + size] in self._fragments:
                covered[start:start + size] = [True] * size
        if not any(covered):
            return text
        out: list[str] = []
        position = 0
        while position < len(text):
            if covered[position]:
                while position < len(text) and covered[position]:
                    position += 1
                out.append(REDACTED)
            else:
                out.append(text[position])
                position += 1
        return "".join(out)


def _quoted(value: str) -> str:
    """`[redacted]` in the value's own JSON shape (a list stays a list, a string a string)."""
    if value.startswith("["):
        return f'["{REDACTED}"]'
    if value[:1] in ("'", '"'):
        return value[0] + REDACTED + value[0]
    return f'"{REDACTED}"'
