"""What a demo or a simulation returns: the outcome of each run of the engine on the simulated account, as
dataclasses the CLI renders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dunctl.simulation.assumptions import DEFAULT_PRESET
from dunctl.simulation.net_terms_outcome import NetTermsOutcome


@dataclass
class CurrencyOutcome:
    """One currency's money, from the report's headline (ended cases; never added across currencies)."""

    currency: str
    cases: int
    ended: int
    recovered: int
    amount_at_stake: int          # ended cases: amount due when the case opened, minor units
    amount_recovered: int         # ended cases: paid after the case opened
    amount_rate: float | None     # amount_recovered / amount_at_stake: recovered of ended, by amount
    amount_failed: int = 0        # every case: amount due when the case opened, minor units
    amount_rate_of_failed: float | None = None   # amount_recovered / amount_failed: recovered of failed, by amount


@dataclass
class Outcome:
    """What one run of the engine on the simulated account achieved. The case figures are `dunctl report`'s own
    (dunctl.report.build_report over the run's ledger), so the demo, `simulate` and `report` agree; the rest is
    what only a simulation knows (invoices billed, who really collected, the size of the book)."""

    name: str
    customers: int                # in the simulated book (some have add-on subscriptions)
    invoices_billed: int
    failed_invoices: int          # cases opened
    recovered: int
    open: int                     # still open (or paused) at the end of the run
    ended: int
    ended_by_state: dict[str, int]
    recovered_of_failed: float | None    # recovered / failed invoices: open cases count as not yet recovered
    recovered_of_ended: float | None  # recovered / ended cases: the report's recovery rate
    currencies: list[CurrencyOutcome]
    days_to_recovery_median: float | None
    days_to_recovery_mean: float | None
    days_to_recovery_p90: float | None
    recovered_after_day_14: float | None  # share of recoveries 14 days or more after the first failure
    messages_sent: int            # emails and SMS customers received (a grouped message once)
    messages_per_recovered: float | None
    retries_dunctl: int           # payment attempts dunctl made
    retries_stripe: int           # attempts Stripe's Smart Retries made
    retries_per_recovered: float | None
    handed_to_people: int         # cases escalated to a person or disputed
    churned: int                  # subscriptions cancelled by exhausted dunning
    involuntary_churn: float | None   # churned / subscriptions in the book: the denominator is known here
    recovered_by_channel: dict[str, int]  # the report's last touch before payment (report --by channel)
    collected_by: dict[str, int]  # who really collected, known only in a simulation: retry, provider_retry,
                                  # email, sms, person, suspension, organic...
    ticks: int
    actions: int
    failed_actions: int
    preset: str = DEFAULT_PRESET
    notices_sent: int = 0         # pre-dunning notices (dunctl/notices)
    cards_updated_after_notice: int = 0
    subscriptions: int | None = None  # the book's subscriptions (plans and add-ons), when known
    # Involuntary churn per month, in customers (the report's: whole months only; issue 24)
    churned_customers: int = 0        # customers churned in the whole months
    customer_months: int = 0          # customers active at the start of each whole month, summed
    churn_per_month: float | None = None
    # Net-terms invoices (dunctl/simulation/net_terms_outcome.py); every figure above is the card cases' only
    net_terms: NetTermsOutcome | None = None

    @property
    def retries_used(self) -> int:
        return self.retries_dunctl + self.retries_stripe


@dataclass
class DemoResult:
    directory: Path
    config_path: Path
    ledger_path: Path
    outbox: Path
    seed: int
    start: datetime
    end: datetime
    outcome: Outcome
    headline: object | None = None   # dunctl.report.Headline
    example_invoice: str | None = None   # a case worth reading with `dunctl case show`
    last_tick: datetime | None = None
    preset: str = DEFAULT_PRESET
    # An experiment's holdout (customers dunctl leaves alone) reported as itself, never pooled into `outcome`,
    # which then covers only the cases dunning worked (issue 24); None when the config has no holdout.
    holdout: Outcome | None = None
    follow_up_days: int = 0
    invoices_billed: int = 0      # the whole run's, holdout included
    # Aging and DSO at the end (dunctl.receivables.aging.ReceivablesSection): what `dunctl report` shows
    receivables: object | None = None
    net_terms_example: str | None = None   # a net-terms case to read: reminders before its due date


@dataclass
class SimulationResult:
    seed: int
    customers: int
    start: datetime
    billing_days: int
    follow_up_days: int
    outcomes: list[Outcome] = field(default_factory=list)
    preset: str = DEFAULT_PRESET
