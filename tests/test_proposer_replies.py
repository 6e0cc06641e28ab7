"""Reading proposer replies: what `parse_reply` finds in real reply shapes, and why
`rejection` turns one down.

The replies are shapes proposer models really sent: the ones quoted in issue 11, and ones
SmolLM2-135M-Instruct wrote through `mipro.local_model` for the example's meta-prompt (with
and without a JSON-schema `response_format`), plus the shapes hosted models use (fenced JSON,
"Sure! Here's ..." announcements).
"""

from __future__ import annotations

import json

import pytest

from proposer_service import TIPS
from proposer_service._meta_prompt import (
    OPENING,
    SECTION_HEADERS,
    SYSTEM_PROMPT,
    WRITE_REQUEST,
    fixed_texts,
)
from proposer_service._replies import Echoes, parse_reply, rejection, sentences_of, trim_echo
from proposer_service._rules import (
    REJECT_CHATTER,
    REJECT_ECHO,
    REJECT_EMPTY,
    REJECT_QUESTION,
    REJECT_TOO_LONG,
    REJECT_TOO_SHORT,
    ReplyRules,
)

RULES = ReplyRules()
EXAMPLE_INPUT = "I think I left my card at a restaurant, can you freeze it for now?"
ECHOES = Echoes.of(sentences_of(fixed_texts(TIPS)), [EXAMPLE_INPUT, "hi"], RULES)
GOOD = "Read the customer's message and answer with the one intent label that fits it best."
OTHER = "You are a banking support expert. Name the single intent of the message."


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(("reply", "expected"), [
    # The structured shape this service asks for, with several instructions.
    (json.dumps({"instructions": [GOOD, OTHER]}), [GOOD, OTHER]),
    # The shape: a JSON list; each element is its own candidate.
    (json.dumps([GOOD, OTHER]), [GOOD, OTHER]),
    # Pretty-printed the way the local model writes it under a grammar.
    ('{ "instructions": [ "' + GOOD + '" ] }', [GOOD]),
    ('{ "instruction": "' + OTHER + '" }', [OTHER]),
    # Fenced JSON, a list of objects.
    ("```json\n" + json.dumps([{"instruction": GOOD}, {"instruction": OTHER}]) + "\n```",
     [GOOD, OTHER]),
    # JSON under a reasoning block, an instruction with its own prefix inside.
    ("<think>which label?</think>" + json.dumps({"instruction": "Instruction: " + GOOD}),
     [GOOD]),
    # Cut short by the token cap: the complete value only.
    ('{ "instructions": ["' + GOOD + '", "Pick the one intent lab', [GOOD]),
    # Cut short before any value closed: the value that was cut.
    ('{"instructions": ["Pick the one intent label that fits the mess',
     ["Pick the one intent label that fits the mess"]),
    # A JSON object holding no instruction.
    ('{"instructions": []}', []),
    ('{"score": 0.5, "reason": 3}', []),
    # Plain text, announced; a quoted block; quotes; a fenced plain block.
    ("Sure! Here's a new instruction:\n\n" + GOOD, [GOOD]),
    ("Here's a new instruction:\n\nYou can change the card you lost.",
     ["You can change the card you lost."]),
    ("> " + GOOD + "\n> Answer with the label only.", [GOOD + "\nAnswer with the label only."]),
    (f'"{GOOD}"', [GOOD]),
    ("```text\n" + GOOD + "\n```", [GOOD]),
    # Text that merely starts with a bracket is still text.
    ("[Important] " + GOOD, ["[Important] " + GOOD]),
    ("", []),
])
def test_parse_reply(reply: str, expected: list[str]) -> None:
    assert parse_reply(reply) == expected


# --------------------------------------------------------------------------- rejection


@pytest.mark.parametrize(("text", "reason"), [
    # Quoted in issue 11: chatty replies the local model sent, taken as candidates before.
    ("I'm ready to help! What task can you describe?", REJECT_QUESTION),
    ("I'm an AI assistant designed to help users craft their own instructions for a language "
     "model.", REJECT_CHATTER),
    # Quoted in issue 11: the demo's best instruction, an echo of the meta-prompt.
    ("## Task\nYou are a helpful assistant. Classify a customer-support message into one of 10 "
     "intents.\n## Scored examples\nInput: my card has not arrived\nOutput: card_arrival",
     REJECT_ECHO),
    # SmolLM2-135M, plain text: a scored example's input copied into the "instruction".
    ("### Instruction I think I left my card at a restaurant, can you freeze it for now? In "
     "this task, we will be using a very high-stakes approach.", REJECT_ECHO),
    ("I'm not sure about the card you gave me, can you freeze it for now? Here's a possible "
     "way to score the new instruction.", REJECT_CHATTER),
    ("I am a helpful assistant, and I can offer you a personalized service. You can ask for "
     "help with a problem. Here is a new instruction for you.", REJECT_CHATTER),
    # SmolLM2-135M under a JSON-schema grammar: identifiers, not instructions.
    ("my_google_pay_topup_get_reverted_offense_reward_1", REJECT_TOO_SHORT),
    ("create_new_instructions_with_additional_features", REJECT_TOO_SHORT),
    # Echoes of the meta-prompt's own lines.
    ("Scored examples:\nThe model should answer with one label.", REJECT_ECHO),
    ("Score 0.67 on 3 seeds: Name the intent label of the message.", REJECT_ECHO),
    ("Input: where is my card\nOutput: {\"intent\": \"card_arrival\"}\nAnswer like this.",
     REJECT_ECHO),
    (WRITE_REQUEST, REJECT_ECHO),
    (OPENING + " Name every label.", REJECT_ECHO),
    ("Make the instruction informative and descriptive about the task. Classify it.",
     REJECT_ECHO),
    # Questions and offers of help.
    ("Which intent does this message belong to?", REJECT_QUESTION),
    ("Could you please provide more details about the task you want me to write for?",
     REJECT_QUESTION),
    ("Sure, I can write that. Classify each message into one intent.", REJECT_CHATTER),
    ("Classify each message into one intent. I hope this helps!", REJECT_CHATTER),
    # Length.
    ("Classify it.", REJECT_TOO_SHORT),
    ("Classify the message carefully. " * 100, REJECT_TOO_LONG),
    ("   ", REJECT_EMPTY),
])
def test_rejection_reasons(text: str, reason: str) -> None:
    assert rejection(text, RULES, ECHOES) == reason


@pytest.mark.parametrize("text", [
    GOOD,
    OTHER,
    "I want you to act as a banking support agent. Read each message and name its intent.",
    "You are an expert. Classify the message into one of: card_arrival, change_pin, "
    "refund_request. Answer with the label only.",
    # Mentions a task, a score and a tip's idea in its own words: still an instruction.
    "Every mistake is costly here: read the whole message, then give the one intent whose "
    "description matches it. Your score depends on the exact label.",
    # Short example inputs ("hi") are too short to count as quotes.
    "Say hi to nobody; classify the message into one intent label.",
])
def test_instructions_are_not_rejected(text: str) -> None:
    assert rejection(text, RULES, ECHOES) is None


def test_every_section_heading_is_an_echo() -> None:
    for header in SECTION_HEADERS:
        assert rejection(f"{header}\n{GOOD}", RULES, ECHOES) == REJECT_ECHO, header
    assert ECHOES.copied_in(SYSTEM_PROMPT) and ECHOES.copied_in("x " + EXAMPLE_INPUT.upper())


def test_thresholds_are_in_one_place_with_their_defaults() -> None:
    assert (RULES.min_words, RULES.max_chars, RULES.near_duplicate_jaccard,
            RULES.echo_quote_chars, RULES.instructions_per_call, RULES.refill_passes,
            RULES.structured_output) == (5, 2500, 0.9, 24, 1, 1, True)
    loose = ReplyRules(min_words=1, max_chars=10_000)
    assert rejection("Classify it.", loose) is None
    assert rejection("Classify the message carefully. " * 100, loose) is None
    with pytest.raises(ValueError):
        ReplyRules(near_duplicate_jaccard=0.0)
    with pytest.raises(ValueError):
        ReplyRules(instructions_per_call=0)


def test_an_instruction_followed_by_an_echo_keeps_the_instruction() -> None:
    # SmolLM2-135M: a sentence of its own, then the meta-prompt's sections again.
    reply = ("The next instruction should be a variation of the previous one, with a "
             "different outcome.\n\n# Task\nClassify a customer-support message.")
    assert trim_echo(reply, RULES) == ("The next instruction should be a variation of the "
                                       "previous one, with a different outcome.")
    assert rejection(trim_echo(reply, RULES), RULES, ECHOES) is None
    # Nothing worth keeping before the echo: the whole reply stays, and is an echo.
    short = "Sure.\n## Scored examples\nInput: hi\nOutput: card_arrival"
    assert trim_echo(short, RULES) == short and rejection(short, RULES, ECHOES) == REJECT_ECHO
    assert trim_echo("## Task\n" + GOOD, RULES) == "## Task\n" + GOOD
    assert trim_echo(GOOD, RULES) == GOOD
