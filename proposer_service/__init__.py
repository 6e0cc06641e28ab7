"""The proposer service: writes candidate instructions with a model.

It owns everything about the proposer model: the tips, the grounded meta-prompt, the
provider calls, reply parsing and de-duplication. `Proposer` is the transport-free core;
`ProposerServer` serves it as `mipro.v1.ProposerService` over gRPC (`python -m
proposer_service`).
"""

from ._errors import InvalidRequest, ProposalsFailed, ProposerError, UnknownProvider
from ._models import (
    Proposal,
    ProposeRequest,
    ProposeResult,
    ProposerModel,
    ScoredExample,
    ScoredInstruction,
    TokenUsage,
)
from ._proposer import Proposer
from ._server import ProposerServer
from ._tips import TIPS, Tip

__all__ = [
    "TIPS",
    "InvalidRequest",
    "Proposal",
    "ProposalsFailed",
    "ProposeRequest",
    "ProposeResult",
    "Proposer",
    "ProposerError",
    "ProposerModel",
    "ProposerServer",
    "ScoredExample",
    "ScoredInstruction",
    "Tip",
    "TokenUsage",
    "UnknownProvider",
]
