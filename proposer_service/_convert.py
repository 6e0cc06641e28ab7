"""Converts between the `mipro.v1` proposer messages and the domain types, in one place."""

from __future__ import annotations

from mipro.v1 import proposer_pb2

from ._models import (
    ProposeRequest,
    ProposeResult,
    ProposerModel,
    ScoredExample,
    ScoredInstruction,
)


def request_from_proto(message: proposer_pb2.ProposeInstructionsRequest) -> ProposeRequest:
    """The domain request; range checks are the core's job."""
    return ProposeRequest(
        job_id=message.job_id,
        model=ProposerModel(provider=message.model.provider, model=message.model.model,
                            temperature=message.model.temperature,
                            max_tokens=message.model.max_tokens),
        mode=message.mode,
        num_candidates=message.num_candidates,
        task_info_json=message.task_info_json,
        baseline_instruction=message.baseline_instruction,
        examples=tuple(ScoredExample(e.input, e.output, e.reward) for e in message.examples),
        previous_candidates=tuple(
            ScoredInstruction(c.instruction, c.score, c.seeds_scored)
            for c in message.previous_candidates),
        seed=message.seed,
        dataset_summary=message.dataset_summary,
        summarize_dataset=message.summarize_dataset,
    )


def result_to_proto(result: ProposeResult) -> proposer_pb2.ProposeInstructionsResponse:
    """The response message for a proposal result."""
    return proposer_pb2.ProposeInstructionsResponse(
        instructions=[proposer_pb2.ProposedInstruction(instruction=p.instruction, tip=p.tip)
                      for p in result.proposals],
        usage=proposer_pb2.TokenUsage(prompt_tokens=result.usage.prompt_tokens,
                                      completion_tokens=result.usage.completion_tokens,
                                      calls=result.usage.calls),
        duplicates_dropped=result.duplicates_dropped,
        rejected=result.rejected,
        dataset_summary=result.dataset_summary,
        plain_text_fallbacks=result.plain_text_fallbacks,
    )
