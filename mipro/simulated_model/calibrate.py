"""`python -m mipro.simulated_model.calibrate`: the simulated model's accuracy on the bundled
support-intents dataset under three kinds of instruction.

It sends every line of `examples/support_intents/dataset.jsonl` through the model core as
the example task app would (the `classify_intent` tool with the 10-label enum, `tool_choice`
"required", temperature 0) under:

- `baseline`: the task app's vague instruction, which names no label;
- `listed`: an instruction that lists the labels without explaining them;
- `explained`: one that explains each label in a few plain words;

and prints each accuracy, plus that of an instruction the simulated model itself writes when
asked in the proposer's format under the "describe the task" tip.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ._model import SimulatedModel
from ._requests import parse_chat_request

DATASET = Path(__file__).resolve().parents[2] / "examples" / "support_intents" / "dataset.jsonl"
LABELS: tuple[str, ...] = (
    "card_arrival", "lost_or_stolen_card", "failed_transfer", "refund_request", "change_pin",
    "exchange_rate", "top_up_failed", "close_account", "unrecognised_charge",
    "update_personal_details",
)
BASELINE = "You are a helpful assistant. Classify the customer's message."
LISTED = ("Classify the customer's message into one of these intents: "
          + ", ".join(LABELS) + ".")
EXPLAINED = """You classify messages sent to a banking app's support team. Pick exactly one intent:
- card_arrival: the customer is waiting for a new card that has not arrived or asks about its delivery.
- lost_or_stolen_card: the card was lost, stolen or is missing and may need to be blocked.
- failed_transfer: a bank transfer or payment sent to another account did not go through.
- refund_request: the customer wants their money back for a purchase or asks where a refund is.
- change_pin: the customer wants to change, reset or find the PIN of their card.
- exchange_rate: questions about currency conversion rates and what foreign money costs.
- top_up_failed: adding money to the account (a top up) failed or was declined.
- close_account: the customer wants to close, cancel or delete their account.
- unrecognised_charge: a payment on the statement the customer did not make or does not recognise.
- update_personal_details: changing personal details such as name, address, email or phone number."""  # noqa: E501


def classify_tool(labels: Sequence[str] = LABELS) -> dict[str, object]:
    """The example task app's tool: `classify_intent(intent: enum of labels)`."""
    return {"type": "function", "function": {
        "name": "classify_intent",
        "description": "Report the intent of the customer's message.",
        "parameters": {"type": "object",
                       "properties": {"intent": {"type": "string", "enum": list(labels)}},
                       "required": ["intent"], "additionalProperties": False}}}


def load_dataset(path: Path = DATASET) -> list[dict[str, str]]:
    """The `{"text", "label"}` records of a JSON-lines dataset."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def accuracy(instruction: str, records: Sequence[dict[str, str]], *,
             labels: Sequence[str] = LABELS, temperature: float = 0.0,
             seed: int | None = None) -> float:
    """The share of `records` the model labels right under `instruction`."""
    model = SimulatedModel()
    right = 0
    for record in records:
        body: dict[str, object] = {
            "model": "simulated", "temperature": temperature, "tool_choice": "required",
            "tools": [classify_tool(labels)],
            "messages": [{"role": "system", "content": instruction},
                         {"role": "user", "content": record["text"]}]}
        if seed is not None:
            body["seed"] = seed
        completion = model.complete(parse_chat_request(body))
        right += completion.choices[0].answer == record["label"]
    return right / len(records) if records else 0.0


def proposal_prompt(records: Sequence[dict[str, str]], tip: str) -> str:
    """A meta-prompt in the proposer service's format, with a few scored examples."""
    examples = "\n\n".join(
        f"Input: {r['text']}\nOutput: {json.dumps({'intent': r['label']})}\nScore: 1.00"
        for r in records[:5])
    return "\n\n".join([
        "## Task\nName: support_intents\nDescription: Classify a customer-support message "
        "from a banking app into one of 10 intents.\nLabels: " + ", ".join(LABELS),
        f"## Current instruction\n{BASELINE}",
        f"## Scored examples\n{examples}",
        f"## Tip\n{tip}",
        "## Write\nWrite one new instruction for this task that will make the model score "
        "higher. Reply with the instruction only.",
    ])


def propose(records: Sequence[dict[str, str]], tip: str, seed: int = 0) -> str:
    """The instruction the simulated model writes for `proposal_prompt(records, tip)`."""
    body = {"model": "simulated", "temperature": 0.7, "seed": seed,
            "messages": [{"role": "user", "content": proposal_prompt(records, tip)}]}
    text = SimulatedModel().complete(parse_chat_request(body)).choices[0].content
    return " ".join((text or "").split())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--seed", type=int, default=None, help="request seed (default none)")
    args = parser.parse_args(argv)
    records = load_dataset(args.dataset)
    print(f"simulated model on {len(records)} records of {args.dataset.name}, temperature 0")
    for name, instruction in (("baseline", BASELINE), ("listed", LISTED),
                              ("explained", EXPLAINED)):
        print(f"  {name:<10} {accuracy(instruction, records, seed=args.seed):6.1%}")
    written = propose(records, "Make sure the instruction describes the task and every label "
                               "in detail.")
    print(f"  {'proposed':<10} {accuracy(written, records, seed=args.seed):6.1%}"
          "  (its own instruction, describe-the-task tip)")


if __name__ == "__main__":
    main()
