"""The proposer service's errors, and which gRPC status each one means.

    ProposerError
    ├── InvalidRequest       a request field is wrong (names the field)           INVALID_ARGUMENT
    │   └── UnknownProvider  the provider name cannot be resolved (names it)      INVALID_ARGUMENT
    └── ProposalsFailed      every model call failed (names provider and cause)   UNAVAILABLE

Each error carries a stable `reason` string (AIP-193) and says whether a retry could help.
`_server.py` maps the tree onto status codes, in one place. No message ever holds an API key.
"""

from __future__ import annotations


class ProposerError(Exception):
    """A request the proposer cannot serve; the message is safe to show the caller."""

    #: The stable machine-readable reason, sent as `google.rpc.ErrorInfo.reason`.
    reason: str = "PROPOSER_ERROR"
    #: Whether the same request might succeed later.
    retryable: bool = False


class InvalidRequest(ProposerError):
    """A request field is missing or out of range."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class UnknownProvider(InvalidRequest):
    """The proposer model's provider cannot be resolved to an endpoint."""

    reason = "UNKNOWN_PROVIDER"

    def __init__(self, provider: str, description: str) -> None:
        super().__init__("model.provider", description)
        self.provider = provider


class ProposalsFailed(ProposerError):
    """Every proposal call to the provider failed; the message names the provider and cause."""

    reason = "PROPOSER_MODEL_UNAVAILABLE"
    retryable = True

    def __init__(self, provider: str, cause: str, *, calls: int) -> None:
        super().__init__(
            f"all {calls} proposal call{'s' if calls != 1 else ''} to provider {provider!r} "
            f"failed: {cause}")
        self.provider = provider
        self.cause = cause
        self.calls = calls
