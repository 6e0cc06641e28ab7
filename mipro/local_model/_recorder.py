"""`--record PATH`: one JSON line per chat completion, so tests can see what reached the model.

Each line is `{"model", "system", "user", "has_tools", "answer", "prompt_tokens",
"completion_tokens", "seconds"}`: the system instruction as the client sent it (null when
there is none), the last user message, whether tools were offered, what the model wrote (the
tool call's arguments, or its text), the token counts and the time the model took.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from ._model import Completion
from ._requests import LocalRequest


class Recorder:
    """Appends request records to a file; does nothing without a path."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _append(self, line: str) -> None:
        assert self.path is not None
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")

    async def record(self, request: LocalRequest, completion: Completion,
                     seconds: float) -> None:
        """Appends the record of one answered request."""
        if self.path is None:
            return
        line = json.dumps({
            "model": request.chat.model,
            "system": request.chat.system,
            "user": request.chat.last_user,
            "has_tools": bool(request.chat.tools),
            "answer": completion.choices[0].answer,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "seconds": round(seconds, 3),
        }, ensure_ascii=False)
        await asyncio.to_thread(self._append, line)
