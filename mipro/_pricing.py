"""List prices used to estimate a job's spend, in US dollars per million tokens.

The estimate is by model name only; a model not listed costs 0 (and the README says so).
"""

from __future__ import annotations

#: (input, output) USD per 1M tokens, from the providers' public price lists.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "llama-3.1-8b-instant": (0.05, 0.08),
    "llama-3.3-70b-versatile": (0.59, 0.79),
}


def estimate_cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """Dollars for the given usage of `model`; 0 when the model has no listed price."""
    prices = PRICES_PER_MILLION.get(model)
    if prices is None:
        return 0.0
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000
