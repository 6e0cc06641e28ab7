"""Prices used to estimate spend, in US dollars per million tokens, and the table's overrides.

The built-in table lists public list prices by model name. `MIPRO_PRICES_FILE` names a JSON
file `{"model": {"input": 0.15, "output": 0.6}, ...}` whose entries replace or add to it
(a self-hosted model can be priced at what its hardware costs). A model in neither costs 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: (input, output) USD per 1M tokens, from the providers' public price lists.
DEFAULT_PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "llama-3.1-8b-instant": (0.05, 0.08),
    "llama-3.3-70b-versatile": (0.59, 0.79),
}


class PriceTableError(ValueError):
    """The prices file is unreadable or malformed; the message names the entry."""


@dataclass(frozen=True)
class PriceTable:
    """Per-model token prices."""

    per_million: Mapping[str, tuple[float, float]]

    @classmethod
    def load(cls, overrides_file: Path | None = None) -> PriceTable:
        """The built-in table with `overrides_file`'s entries applied."""
        prices = dict(DEFAULT_PRICES_PER_MILLION)
        if overrides_file is not None:
            try:
                raw = json.loads(overrides_file.read_text())
            except (OSError, ValueError) as exc:
                raise PriceTableError(f"MIPRO_PRICES_FILE {overrides_file}: {exc}") from None
            if not isinstance(raw, dict):
                raise PriceTableError("MIPRO_PRICES_FILE must hold a JSON object of models")
            for model, entry in raw.items():
                try:
                    prices[model] = (float(entry["input"]), float(entry["output"]))
                except (TypeError, KeyError, ValueError):
                    raise PriceTableError(
                        f"MIPRO_PRICES_FILE entry {model!r} needs numeric 'input' and 'output'"
                    ) from None
        return cls(prices)

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollars for the given usage of `model`; 0 when the model has no price."""
        price = self.per_million.get(model)
        if price is None:
            return 0.0
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000
