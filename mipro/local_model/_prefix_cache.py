"""Saved attention (KV) states of recent prompts, so a prompt that starts like an earlier one
skips evaluating that part again.

llama.cpp already reuses the prefix a prompt shares with the *previous* one. The optimizer
interleaves candidates (seed by seed), so consecutive prompts rarely share more than the chat
template's first tokens, while every rollout of one candidate shares its long system message.
This cache keeps the state of recent prompts (sequence 0 of the context, copied out with
`llama_state_seq_get_data`) and, before a request, puts back the one sharing the longest
prefix with it: the rest is evaluated on the very same KV values, so answers are the same as
without the cache (bit-identical logits, measured), only faster.

An entry that shares at least half of its tokens with a newer prompt is replaced by it (the
same system message with another user message); beyond `max_entries` or `max_bytes` the least
recently used go.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

#: Prompts remembered at most.
DEFAULT_MAX_ENTRIES = 32
#: Bytes of saved state at most (a 300-token SmolLM2-135M prompt is about 7 MB).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: A restored prefix must beat what the context already holds by this many tokens.
MIN_GAIN_TOKENS = 16


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The number of leading tokens `a` and `b` share."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


class PrefixCache:
    """KV states of recent prompts for one `llama_cpp.Llama`; not thread-safe (the model's
    lock covers it)."""

    def __init__(self, llama: Any, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        import llama_cpp

        self._api = llama_cpp
        self._llama = llama
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        #: Tokens evaluated from a restored state instead of afresh, for logs and tests.
        self.tokens_reused = 0

    def _current(self) -> list[int]:
        return list(self._llama.input_ids[: self._llama.n_tokens])

    def restore(self, prompt: Sequence[int]) -> int:
        """Puts back the saved state sharing the longest prefix with `prompt` when it beats
        the context's own; returns the prefix length now in the context."""
        llama = self._llama
        have = common_prefix(self._current(), prompt)
        best_key, best = None, have
        for key in self._entries:
            shared = common_prefix(key, prompt)
            if shared > best:
                best_key, best = key, shared
        if best_key is None or best < have + MIN_GAIN_TOKENS:
            return have
        data = self._entries[best_key]
        self._entries.move_to_end(best_key)
        llama._ctx.kv_cache_seq_rm(0, 0, -1)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if self._api.llama_state_seq_set_data(llama._ctx.ctx, buffer, len(data), 0) == 0:
            llama.reset()  # could not restore: evaluate from scratch
            return 0
        llama._ctx.kv_cache_seq_rm(0, best, -1)
        llama.input_ids[:best] = best_key[:best]
        llama.n_tokens = best
        llama._requires_eval = True  # the logits in hand are not this prefix's
        self.tokens_reused += best
        return best

    def save(self, prompt_length: int) -> None:
        """Keeps the state of the prompt the context holds: its first `prompt_length` tokens
        (the answer that follows them is dropped)."""
        llama = self._llama
        if not 0 < prompt_length <= llama.n_tokens:
            return
        key = tuple(int(t) for t in llama.input_ids[:prompt_length])
        llama._ctx.kv_cache_seq_rm(0, prompt_length, -1)
        llama.n_tokens = prompt_length
        llama._requires_eval = True
        size = self._api.llama_state_seq_get_size(llama._ctx.ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = self._api.llama_state_seq_get_data(llama._ctx.ctx, buffer, size, 0)
        if not 0 < written <= size:
            return
        for old in [k for k in self._entries if 2 * common_prefix(k, key) >= len(k)]:
            del self._entries[old]
        self._entries[key] = bytes(buffer)[:written]
        while len(self._entries) > self._max_entries or (
                len(self._entries) > 1
                and sum(map(len, self._entries.values())) > self._max_bytes):
            self._entries.popitem(last=False)
