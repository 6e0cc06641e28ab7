"""Opaque page tokens over ordered, append-only lists (a job's candidates, its rollouts).

A token is the offset of the next item, bound to the list it pages (the job and what is
listed), so a token of another job or list is refused by name instead of paging wrongly.
Items only ever append (candidates by index, rollouts in finish order), so an offset stays
valid while the job runs: a later page never skips or repeats an item.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TypeVar

from ._errors import InvalidArgument

T = TypeVar("T")


def encode_token(scope: str, offset: int) -> str:
    """The token of the page starting at `offset` of the list `scope`."""
    return base64.urlsafe_b64encode(f"{scope}|{offset}".encode()).decode().rstrip("=")


def decode_token(token: str, scope: str, field: str) -> int:
    """The offset `token` names; 0 for an empty token. `InvalidArgument(field)` when it is not
    a token of `scope`."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        given_scope, _, offset = raw.rpartition("|")
        value = int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value, given_scope = -1, ""
    if given_scope != scope or value < 0:
        raise InvalidArgument(field, "is not a token this server issued for this list; pass "
                                     "the previous page's token unchanged, or none")
    return value


def page(items: Sequence[T], *, scope: str, size: int, token: str, default: int, maximum: int,
         size_field: str, token_field: str) -> tuple[list[T], str]:
    """One page of `items` and the next page's token ('' on the last page)."""
    if size < 0 or size > maximum:
        raise InvalidArgument(size_field, f"must be between 1 and {maximum}, got {size}")
    start = decode_token(token, scope, token_field)
    end = start + (size or default)
    return list(items[start:end]), encode_token(scope, end) if end < len(items) else ""
