"""A simulated OpenAI-compatible model server, for tests and the offline demo.

This is a **simulation**, not a language model: no weights, no API key. It is a real HTTP
server (`create_app()`, run with `python -m mipro.simulated_model --host 127.0.0.1
--port 8090 [--record PATH]`) that `openai.AsyncOpenAI` and httpx talk to like any
OpenAI-compatible endpoint: `POST /v1/chat/completions` with tools and `tool_choice`,
`GET /v1/models`, `GET /health`. Any model name is accepted and echoed.

Its answers depend on the prompt the way a real model's do, so prompt optimization has
something real to find, and they are deterministic: the same request (messages, tools,
temperature, seed) always gets the same answer.

- With tools it calls the function and picks each enum argument with a transparent
  bag-of-words classifier (`_classifier.py`): label-name words, the words the system
  instruction uses to explain each label, and a small banking thesaurus applied only to the
  labels the instruction talks about, plus seeded noise that is larger for vague instructions.
- Given the proposer service's meta-prompt it writes one new instruction, shaped by the tip
  and built on the best earlier candidate (`_proposer.py`).

Calibration (`python -m mipro.simulated_model.calibrate`: all 300 records of
`examples/support_intents/dataset.jsonl`, the 10-label enum, temperature 0, no seed;
measured):

    baseline "You are a helpful assistant. Classify the customer's message."   33.0%
    the labels listed, not explained                                           52.7%
    each label explained in a few plain words                                  82.7%
    its own proposal under the describe-the-task tip                           77.7%

With seeds 1-3 the same rows read 29-32%, 54-57%, 80-82% and 74-78%. It never reaches 100%.
The thesaurus is generic banking vocabulary (147 entries), not dataset sentences.

Its scores say nothing about a real model's.
"""

from ._model import SimulatedModel
from ._requests import ChatRequest, InvalidRequestError, parse_chat_request
from ._server import create_app

__all__ = [
    "ChatRequest",
    "InvalidRequestError",
    "SimulatedModel",
    "create_app",
    "parse_chat_request",
]
