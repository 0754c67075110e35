"""The deposit policy, from catalog.toml's `[deposits]` table: which requests need a deposit, how
much, and whether it is taken now (a charge) or held on the card until the visit (a hold).

Pure functions, no database and no clock: `decide()` gets the request's facts and answers. A rule
matches when every condition it names holds (first visit, sizes, past no-shows, price above); the
first matching rule wins, so order the rules from the most specific.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from core.types import SizeClass

# Stripe keeps an uncaptured card authorisation about 7 days (Visa merchant-initiated about 5): a
# hold is only placed for a visit at most this far away, else the deposit is charged.
HOLD_MAX_AHEAD = timedelta(days=5)
KINDS = ("charge", "hold")


class PolicyConfigError(ValueError):
    """A malformed `[deposits]` table; the message names the rule."""


@dataclass(frozen=True, slots=True)
class DepositRule:
    name: str
    first_visit: bool | None = None  # True: only a client's first visit
    sizes: frozenset[str] = frozenset()  # any pet of these size classes; empty: any size
    min_no_shows: int | None = None  # the client's past no-shows at least this many
    price_above_cents: int | None = None  # the quote's upper bound above this
    amount_cents: int | None = None
    percent: float | None = None  # of the quote's lower bound (what is surely owed)
    kind: str = "charge"

    def matches(self, facts: RequestFacts) -> bool:
        if self.first_visit is not None and facts.first_visit != self.first_visit:
            return False
        if self.sizes and not self.sizes & set(facts.sizes):
            return False
        if self.min_no_shows is not None and facts.no_shows < self.min_no_shows:
            return False
        return self.price_above_cents is None or (facts.price_max_cents or 0) > self.price_above_cents

    def amount(self, facts: RequestFacts) -> int:
        if self.amount_cents is not None:
            return self.amount_cents
        base = facts.price_min_cents or facts.price_max_cents or 0
        return round(base * (self.percent or 0) / 100)


@dataclass(frozen=True, slots=True)
class DepositPolicy:
    rules: tuple[DepositRule, ...] = ()
    # Cancelled at least this long before the visit: refunded. None: the booking's cancellation notice.
    refund_notice_hours: float | None = None


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the policy looks at, gathered by the service from the request and the client's past."""

    first_visit: bool
    sizes: Sequence[str]
    no_shows: int
    price_min_cents: int | None
    price_max_cents: int | None
    ahead: timedelta  # from now to the visit


@dataclass(frozen=True, slots=True)
class Deposit:
    rule: str
    amount_cents: int
    kind: str  # "charge" or "hold"


def decide(policy: DepositPolicy, facts: RequestFacts) -> Deposit | None:
    """The deposit this request needs, or None. A hold for a visit too far away is a charge."""
    for rule in policy.rules:
        if not rule.matches(facts):
            continue
        amount = rule.amount(facts)
        if amount < 50:  # Stripe's minimum charge is $0.50
            return None
        kind = rule.kind if facts.ahead <= HOLD_MAX_AHEAD else "charge"
        return Deposit(rule=rule.name, amount_cents=amount, kind=kind)
    return None


def parse_policy(table: Mapping[str, Any] | None) -> DepositPolicy:
    """`[deposits]` as stored (the TOML table): validated, typed."""
    if not table:
        return DepositPolicy()
    rules = tuple(_rule(n, dict(raw)) for n, raw in enumerate(table.get("rules") or []))
    notice = table.get("refund_notice_hours")
    return DepositPolicy(rules=rules, refund_notice_hours=float(notice) if notice is not None else None)


def _rule(n: int, raw: dict[str, Any]) -> DepositRule:
    where = f"deposits.rules[{n}]"
    known = {
        "name",
        "first_visit",
        "sizes",
        "min_no_shows",
        "price_above_cents",
        "amount_cents",
        "percent",
        "kind",
    }
    unknown = set(raw) - known
    if unknown:
        raise PolicyConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    if ("amount_cents" in raw) == ("percent" in raw):
        raise PolicyConfigError(f"{where}: give exactly one of amount_cents or percent")
    kind = str(raw.get("kind", "charge"))
    if kind not in KINDS:
        raise PolicyConfigError(f"{where}: kind must be 'charge' or 'hold', got {kind!r}")
    sizes = [str(s) for s in raw.get("sizes") or ()]
    for size in sizes:
        if size not in {c.value for c in SizeClass}:
            raise PolicyConfigError(f"{where}: unknown size {size!r}")
    percent = float(raw["percent"]) if "percent" in raw else None
    if percent is not None and not 0 < percent <= 100:
        raise PolicyConfigError(f"{where}: percent must be in (0, 100]")
    amount = int(raw["amount_cents"]) if "amount_cents" in raw else None
    if amount is not None and amount < 50:
        raise PolicyConfigError(f"{where}: amount_cents must be at least 50 (Stripe's minimum)")
    return DepositRule(
        name=str(raw.get("name") or f"rule {n + 1}"),
        first_visit=bool(raw["first_visit"]) if "first_visit" in raw else None,
        sizes=frozenset(sizes),
        min_no_shows=int(raw["min_no_shows"]) if "min_no_shows" in raw else None,
        price_above_cents=int(raw["price_above_cents"]) if "price_above_cents" in raw else None,
        amount_cents=amount,
        percent=percent,
        kind=kind,
    )
