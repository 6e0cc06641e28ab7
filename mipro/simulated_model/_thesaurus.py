"""The simulated model's "world knowledge": a small thesaurus of banking and support words.

A real model knows that `stolen` is close to `lost`, that a `refund` is `money back` and that
a `pin` is a `code`. Here that knowledge is a list of synonym groups of generic banking and
customer-support vocabulary (no dataset sentences). The classifier uses it to widen the
evidence of the labels an instruction talks about, and the proposal writer to explain labels
in other words. Entries may be phrases; phrases are matched as consecutive stems.
"""

from __future__ import annotations

from functools import cache

from ._text import stem, words

#: Synonym groups, in plain surface form. Keep it generic and under ~150 entries.
GROUPS: tuple[tuple[str, ...], ...] = (
    ("lost", "lose", "missing", "misplaced", "stolen", "steal", "theft", "thief", "gone",
     "cant find"),
    ("block", "freeze", "lock", "deactivate", "replacement"),
    ("refund", "money back", "reimburse", "chargeback", "pay back", "dispute", "return",
     "reverse"),
    ("pin", "code", "passcode", "digits"),
    ("reset", "forgot", "forgotten", "remember", "unblock"),
    ("change", "update", "edit", "correct", "modify", "fix", "amend"),
    ("charge", "payment", "transaction", "debit", "purchase", "spend", "bill"),
    ("unrecognised", "recognise", "unknown", "unauthorised", "fraud", "fraudulent", "scam",
     "suspicious", "strange", "didnt make"),
    ("arrive", "arrival", "deliver", "delivery", "post", "mail", "ship", "dispatch", "courier",
     "receive", "track"),
    ("wait", "expect", "how long", "eta", "when will"),
    ("top up", "topup", "add money", "add funds", "load", "reload", "deposit", "fund"),
    ("transfer", "send money", "wire", "sepa", "iban", "recipient", "beneficiary",
     "standing order", "payee"),
    ("fail", "decline", "reject", "error", "bounce", "unsuccessful", "go through",
     "didnt work"),
    ("close", "delete", "terminate", "shut", "leave", "cancel", "end", "quit"),
    ("account", "profile", "membership"),
    ("rate", "exchange", "currency", "conversion", "convert", "fx", "foreign", "abroad",
     "interbank", "markup", "euro", "dollar", "pound"),
    ("fee", "cost", "price", "commission"),
    ("personal", "details", "information", "info", "name", "surname", "address", "postcode",
     "email", "phone", "mobile", "number", "contact", "date of birth"),
    ("money", "funds", "balance", "cash"),
    ("request", "claim", "ask for", "apply"),
)


def feature_of(entry: str) -> str:
    """The feature an entry stands for: its stems joined by spaces."""
    return " ".join(stem(w) for w in words(entry))


@cache
def _index() -> tuple[dict[str, frozenset[str]], tuple[tuple[str, ...], ...], dict[str, str]]:
    neighbours: dict[str, set[str]] = {}
    surfaces: dict[str, str] = {}
    phrases: set[tuple[str, ...]] = set()
    for group in GROUPS:
        keys = [feature_of(entry) for entry in group]
        for entry, key in zip(group, keys, strict=True):
            neighbours.setdefault(key, set()).update(k for k in keys if k != key)
            surfaces.setdefault(key, entry)
            if " " in key:
                phrases.add(tuple(key.split()))
    frozen = {key: frozenset(value) for key, value in neighbours.items()}
    return frozen, tuple(sorted(phrases)), surfaces


def entry_count() -> int:
    """How many entries the thesaurus has."""
    return sum(len(group) for group in GROUPS)


def neighbours(feature: str) -> frozenset[str]:
    """The features the model treats as close to `feature` (empty when it knows none)."""
    return _index()[0].get(feature, frozenset())


def phrases() -> tuple[tuple[str, ...], ...]:
    """Every multi-word entry, as a tuple of stems."""
    return _index()[1]


def surface(feature: str) -> str:
    """A readable word or phrase for `feature` (the feature itself when unknown)."""
    return _index()[2].get(feature, feature)
