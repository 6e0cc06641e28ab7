"""The transport-free core: `LocalModel.complete(request)` runs a GGUF model with llama.cpp.

The model is loaded once (llama-cpp-python, CPU only) and answers one request at a time:
llama.cpp is not re-entrant, so `complete` holds a lock and the server calls it from a single
worker thread. The chat template is the one in the GGUF file. Sampling:

- temperature 0 is greedy decoding, so the same request always gets the same answer. Prompt
  prefixes seen before are not evaluated again (llama.cpp keeps the previous prompt's, and
  `_prefix_cache.py` those of recent prompts); the rest is evaluated on the same KV values,
  which gives bit-identical logits to evaluating the whole prompt afresh (measured);
- with a temperature above 0, `seed` fixes the sampler's random state: the same request with
  the same seed gets the same answer; without a seed each call draws a fresh one, as a hosted
  model would. `n` choices use seeds `seed`, `seed + 1`, ...; a seeded request above
  temperature 0 is evaluated from an empty context (llama.cpp server's `cache_prompt: false`),
  neither reusing nor saving prompt states, so its answer cannot depend on which requests
  came before it or in which order they arrived (the proposer's calls of a round arrive
  concurrently). It costs evaluating the whole prompt: about 3 s for a 600-token proposal
  prompt on one thread;
- `top_p` defaults to llama.cpp's 0.95, with its `top_k` 40 and `min_p` 0.05, which keep a
  model this small from wandering into noise;
- `max_tokens` defaults to `DEFAULT_MAX_TOKENS` and is cut to what fits the context.

Two process-wide settings are made before llama.cpp loads. `OMP_WAIT_POLICY=PASSIVE` (unless
set already): with more than one thread, llama.cpp's OpenMP threads then sleep instead of
spinning while they wait for each other, which on a 2-core machine shared with the rest of
the stack decided between 0.7 s and 8 s per call (measured). And llama.cpp's extra CPU buffer
types (AMX tiles, weight repacking) are off: AMX code crashes (SIGSEGV in
`ggml_backend_amx_mul_mat`) on virtual machines that advertise AMX without enabling it, and a
135M model gains nothing from them.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._constraints import (
    TOOL_CALL,
    constraint_for,
    grammar_text,
    read_tool_call,
    with_history_calls,
    with_note,
)
from ._prefix_cache import PrefixCache
from ._requests import InvalidRequestError, LocalRequest

#: Threads llama.cpp computes with. One, measured on the 2-core demo machine: for a 135M model
#: a second thread makes prompts faster (320 vs 184 tokens/s) but generation slower, and a
#: call about as fast overall (0.47 s vs 0.42 s); and when other processes want the CPU, two
#: threads waiting for each other turned 0.3 s calls into 30 s ones, while one thread just
#: shares the CPU.
DEFAULT_THREADS = 1
#: The context window, in tokens: prompt plus answer.
DEFAULT_CONTEXT_SIZE = 4096
#: Completion tokens when the request sets no `max_tokens`.
DEFAULT_MAX_TOKENS = 1024
#: llama.cpp's default `top_p`, used when the request gives none.
DEFAULT_TOP_P = 0.95
#: Compiled grammars kept, by grammar text.
GRAMMAR_CACHE_SIZE = 64
#: llama.cpp reads this seed as "pick a random one", so request seeds never map to it.
_LLAMA_RANDOM_SEED = 0xFFFFFFFF


class ContextLengthExceeded(InvalidRequestError):
    """The prompt does not fit the model's context window."""


@dataclass(frozen=True)
class ToolCall:
    """One function call of a choice; `arguments` is a JSON string."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Choice:
    """One answer: text content, or a tool call."""

    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    #: What the model wrote, for the record: the tool call's arguments, or the text.
    answer: str
    completion_tokens: int


@dataclass(frozen=True)
class Completion:
    """The model's answer to one request; token counts come from the model's tokenizer."""

    id: str
    model: str
    choices: tuple[Choice, ...]
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(choice.completion_tokens for choice in self.choices)


def _load(path: Path, threads: int, context_size: int) -> Any:
    """The `llama_cpp.Llama` for `path`, with the process-wide settings described above."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import llama_cpp.llama as llama_module

    defaults = llama_module.llama_cpp.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    # `Llama()` takes no option for this field, so its default is swapped while it loads.
    llama_module.llama_cpp.llama_model_default_params = without_extra_buffers
    try:
        return llama_module.Llama(model_path=str(path), n_ctx=context_size, n_threads=threads,
                                  n_threads_batch=threads, verbose=False)
    finally:
        llama_module.llama_cpp.llama_model_default_params = defaults


def _chat_formatter(llama: Any) -> Any:
    """The chat template `create_chat_completion` uses, when it is the GGUF's own (None
    otherwise): the prefix cache needs a request's prompt tokens before it runs."""
    from llama_cpp import llama_chat_format

    template = llama.metadata.get("tokenizer.chat_template")
    if llama.chat_format != "chat_template.default" or not template:
        return None
    eos, bos = llama.token_eos(), llama.token_bos()
    text = llama._model.token_get_text
    return llama_chat_format.Jinja2ChatFormatter(
        template=template, eos_token=text(eos) if eos != -1 else "",
        bos_token=text(bos) if bos != -1 else "", stop_token_ids=[eos])


def _llama_seed(seed: int) -> int:
    return seed % _LLAMA_RANDOM_SEED


class LocalModel:
    """A GGUF model loaded with llama.cpp, answering chat completion requests."""

    def __init__(self, path: Path, *, threads: int = DEFAULT_THREADS,
                 context_size: int = DEFAULT_CONTEXT_SIZE) -> None:
        import llama_cpp

        self.path = path
        #: The id the server reports: the file name without `.gguf`.
        self.model_id = path.name.removesuffix(".gguf")
        self.threads = threads
        self.context_size = context_size
        self.llama_cpp_version = str(llama_cpp.__version__)
        self._llama = _load(path, threads, context_size)
        self._formatter = _chat_formatter(self._llama)
        #: Saved states of recent prompts (None without the GGUF's own chat template).
        self.prefix_cache = PrefixCache(self._llama) if self._formatter is not None else None
        self._lock = threading.Lock()
        self._grammars: OrderedDict[str, Any] = OrderedDict()

    @property
    def description(self) -> str:
        """What answers, for logs: the model file and the engine."""
        return (f"{self.model_id} through llama.cpp (llama-cpp-python "
                f"{self.llama_cpp_version}, CPU, {self.threads} threads)")

    def _grammar(self, text: str | None, param: str) -> Any:
        """The compiled grammar for `text`, checked by llama.cpp's own parser first: a grammar
        it rejects would otherwise crash the sampler."""
        import llama_cpp
        from llama_cpp import LlamaGrammar

        if text is None:
            return None
        if text in self._grammars:
            self._grammars.move_to_end(text)
            return self._grammars[text]
        sampler = llama_cpp.llama_sampler_init_grammar(
            self._llama._model.vocab, text.encode("utf-8"), b"root")
        if not sampler:
            raise InvalidRequestError(f"Invalid schema in '{param}': llama.cpp rejected the "
                                      "grammar made from it.", param)
        llama_cpp.llama_sampler_free(sampler)
        grammar = LlamaGrammar.from_string(text, verbose=False)
        self._grammars[text] = grammar
        if len(self._grammars) > GRAMMAR_CACHE_SIZE:
            self._grammars.popitem(last=False)
        return grammar

    def _prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The tokens `create_chat_completion` will evaluate for `messages`."""
        rendered = self._formatter(messages=messages)
        return list(self._llama.tokenize(rendered.prompt.encode("utf-8"),
                                         add_bos=not rendered.added_special, special=True))

    def complete(self, request: LocalRequest) -> Completion:
        """The answer to `request`; raises `InvalidRequestError` for what the model cannot do
        (a schema without a grammar, a prompt longer than the context)."""
        chat = request.chat
        constraint = constraint_for(request)
        messages = with_note(with_history_calls(request, constraint), constraint.note)
        seed = chat.seed if chat.seed is not None else secrets.randbits(31)
        # Seeded sampling starts from an empty context: its answer depends on nothing else.
        fresh = chat.temperature > 0 and chat.seed is not None
        with self._lock:
            grammar = self._grammar(grammar_text(constraint), constraint.param)
            if self.prefix_cache is not None and not fresh:
                self.prefix_cache.restore(self._prompt_tokens(messages))
            results = []
            for index in range(chat.n):
                if fresh:
                    self._llama.reset()  # n_tokens 0: the next eval clears the KV cache
                try:
                    results.append(self._llama.create_chat_completion(
                        messages=messages, grammar=grammar, temperature=chat.temperature,
                        top_p=DEFAULT_TOP_P if request.top_p is None else request.top_p,
                        seed=_llama_seed(seed + index),
                        max_tokens=chat.max_tokens or DEFAULT_MAX_TOKENS,
                        stop=list(request.stop)))
                except ValueError as error:  # llama-cpp-python's "exceed context window"
                    raise ContextLengthExceeded(
                        f"This model's context window is {self.context_size} tokens and the "
                        f"messages do not fit ({error}).", "messages") from None
                if self.prefix_cache is not None and not fresh:
                    self.prefix_cache.save(int(results[-1]["usage"]["prompt_tokens"]))
        choices = []
        for result in results:
            text = result["choices"][0]["message"]["content"] or ""
            finish = result["choices"][0]["finish_reason"] or "stop"
            tokens = int(result["usage"]["completion_tokens"])
            if constraint.kind == TOOL_CALL:
                name, arguments = read_tool_call(constraint, text)
                call = ToolCall("call_" + secrets.token_hex(12), name, arguments)
                choices.append(Choice(None, (call,), "tool_calls" if finish == "stop" else finish,
                                      arguments, tokens))
            else:
                text = text.strip() if grammar is not None else text
                choices.append(Choice(text, (), finish, text, tokens))
        return Completion("chatcmpl-" + secrets.token_hex(12), self.model_id, tuple(choices),
                          int(results[0]["usage"]["prompt_tokens"]))
