"""`--record PATH`: one JSON line per chat completion, so tests can see what reached the model.

Each line is `{"model", "system", "user", "has_tools", "answer"}`: the system instruction
(null when there is none), the last user message, whether tools were offered, and what the
model answered (the label it chose, or its text).
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from ._model import Completion
from ._requests import ChatRequest


class Recorder:
    """Appends request records to a file; does nothing without a path."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _append(self, line: str) -> None:
        assert self.path is not None
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")

    async def record(self, request: ChatRequest, completion: Completion) -> None:
        """Appends the record of one answered request."""
        if self.path is None:
            return
        line = json.dumps({
            "model": request.model,
            "system": request.system,
            "user": request.last_user,
            "has_tools": bool(request.tools),
            "answer": completion.choices[0].answer,
        }, ensure_ascii=False)
        await asyncio.to_thread(self._append, line)
