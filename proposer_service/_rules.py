"""Every threshold of the proposer's reply handling, in one place, with its default.

`ReplyRules` is a frozen value: `Proposer(rules=ReplyRules(...))` changes them; the README's
"The proposer" section lists the same defaults. The reasons a reply is rejected are the
`REJECT_*` strings, reported per reason in the proposals event (`rejected`), in the
`ProposeInstructionsResponse.rejected` map and in the proposer's log line "proposals ready".
"""

from __future__ import annotations

from dataclasses import dataclass

from mipro._settings import Settings

#: Nothing instruction-like was left once the reply was parsed (empty text, an empty list, a
#: JSON object without an instruction).
REJECT_EMPTY = "empty"
#: Fewer than `ReplyRules.min_words` words.
REJECT_TOO_SHORT = "too_short"
#: More than `ReplyRules.max_chars` characters.
REJECT_TOO_LONG = "too_long"
#: A question back to whoever asked ("What task can you describe?").
REJECT_QUESTION = "question"
#: The model talking as an assistant instead of writing an instruction ("I'm ready to help!",
#: "I'm an AI assistant designed to ...", "Sure! ...").
REJECT_CHATTER = "chatter"
#: An echo of the meta-prompt: its section headings, its scored-example lines, its request
#: or tip sentences, or a scored example's input quoted verbatim.
REJECT_ECHO = "echo"
#: A copy or near-copy of the baseline instruction.
REJECT_BASELINE = "near_duplicate_of_baseline"
#: A copy or near-copy of a candidate of an earlier round.
REJECT_EARLIER = "near_duplicate_of_earlier_candidate"
#: A copy or near-copy of another proposal of the same request.
REJECT_DUPLICATE = "near_duplicate"

#: Reasons that are duplicates, also counted in `duplicates_dropped`.
DUPLICATE_REASONS = frozenset({REJECT_BASELINE, REJECT_EARLIER, REJECT_DUPLICATE})


@dataclass(frozen=True)
class ReplyRules:
    """What counts as an instruction, and how many the proposer asks for per call."""

    #: Fewer words than this is `too_short`. The example's baseline ("You are a helpful
    #: assistant. Classify the customer's message.") has 9.
    min_words: int = 5
    #: More characters than this is `too_long`: a system prompt, not an essay or a dump of
    #: the meta-prompt.
    max_chars: int = 2500
    #: Word-set Jaccard similarity at or above which two instructions count as the same. Two
    #: 20-word instructions that differ in one word score 19/21 = 0.905.
    near_duplicate_jaccard: float = 0.9
    #: A scored example's input quoted verbatim counts as an echo when at least this long.
    echo_quote_chars: int = 24
    #: Instructions asked for in one call (the JSON schema's `maxItems`). One call per
    #: candidate, each under its own tip, is what DSPy does and what measured best on the
    #: local model (README, "The proposer").
    instructions_per_call: int = 1
    #: When fewer than `num_candidates` survive, calls made again for the missing ones (with
    #: new seeds and the next tips), at most this many extra passes.
    refill_passes: int = 1
    #: Ask for JSON with `response_format` (a JSON schema); a provider that refuses it is
    #: asked again without, once per process and endpoint.
    structured_output: bool = True

    def __post_init__(self) -> None:
        if self.min_words < 1 or self.max_chars < 1 or self.echo_quote_chars < 1:
            raise ValueError("min_words, max_chars and echo_quote_chars must be positive")
        if not 0.0 < self.near_duplicate_jaccard <= 1.0:
            raise ValueError("near_duplicate_jaccard must be in (0, 1]")
        if self.instructions_per_call < 1 or self.refill_passes < 0:
            raise ValueError("instructions_per_call must be positive, refill_passes >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplyRules:
        """The defaults, with what the operator may set (`MIPRO_PROPOSER_STRUCTURED_OUTPUT`,
        `MIPRO_PROPOSER_INSTRUCTIONS_PER_CALL`)."""
        return cls(structured_output=settings.proposer_structured_output,
                   instructions_per_call=settings.proposer_instructions_per_call)
