"""Every number the simulated Stripe account uses, with where it comes from. One place, on purpose.

The demo and `dunctl simulate` are only as honest as these. Each parameter says what it means and its source:

- **guide**: `docs/dunning-guide.txt` (LedgerUp, "Dunning Management Automation: The Complete Guide"), quoting
  the research it names (ChurnWard, ProfitWell, Recurly, Chargebee).
- **design**: dunctl's DESIGN.md (Stripe and card-network facts).
- **published**: a survey or report other than the guide (Atradius, Xero), named with its address in the quote;
  used for net-terms (B2B invoices with payment terms), which the guide does not cover.
- **issue**: a figure stated in the project's own issue (#26), with no source behind it.
- **estimate**: the guide gives no figure. The value is dunctl's own, chosen to be plausible and then
  *calibrated* so that the whole model reproduces the guide's headline figures (see CALIBRATION_TARGETS and
  docs/simulation.md for what the model measures against them). Change an estimate and re-run
  `bench/bench_demo.py --calibrate` to see what moves.

The assumptions table in docs/simulation.md is generated from this module
(`python -m dunctl.simulation.assumptions`); a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from dunctl.errors import UsageError

GUIDE = "guide"
DESIGN = "design"
ESTIMATE = "estimate"
PUBLISHED = "published"
ISSUE = "issue"

SOURCES = {
    GUIDE: "docs/dunning-guide.txt (LedgerUp guide, citing ChurnWard, ProfitWell, Recurly, Chargebee)",
    DESIGN: "DESIGN.md (Stripe and card-network facts)",
    ESTIMATE: "dunctl estimate: no figure in the guide; calibrated against the guide's headline numbers",
    PUBLISHED: "a published survey or vendor report (named, with its address, in the quote)",
    ISSUE: "issue #26 (stated there without a source)",
}


def _p(value, source: str, meaning: str, quote: str = ""):
    """A parameter: its value, its source, what it means, and (for sourced values) the sentence it rests on."""
    meta = {"source": source, "meaning": meaning, "quote": quote}
    if isinstance(value, (dict, list)):
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=value, metadata=meta)


@dataclass(frozen=True)
class Assumptions:
    # -- the book of customers --------------------------------------------------------------------------------
    b2b_share: float = _p(0.35, ESTIMATE, "share of customers that are businesses (B2B); the rest are consumers")
    enterprise_share_of_b2b: float = _p(0.15, ESTIMATE, "share of B2B customers on the enterprise tier")
    annual_share: dict = _p({"b2c": 0.15, "b2b": 0.35}, ESTIMATE, "share of customers billed yearly, by kind")
    usage_based_share: dict = _p({"b2c": 0.05, "b2b": 0.40}, ESTIMATE,
                                 "share of subscriptions with a metered (usage-based) price, by kind")
    currency_mix: dict = _p({"usd": 0.60, "eur": 0.20, "gbp": 0.12, "jpy": 0.08}, ESTIMATE,
                            "currency of the subscription")
    ach_share: dict = _p({"b2c": 0.03, "b2b": 0.30, "b2b_usage": 0.50}, GUIDE,
                         "share of USD payers who pay by ACH debit (us_bank_account), by kind",
                         "Usage-based B2B billing relies more heavily on ACH (the shares are estimates)")
    monthly_price_usd: dict = _p({"b2c": (900, 4900), "b2b": (9900, 250000), "enterprise": (500000, 2500000)},
                                 ESTIMATE, "monthly list price range in US cents, by tier (log-uniform)")
    annual_months: int = _p(10, ESTIMATE, "an annual plan costs this many months (two months free)")
    fx_per_usd: dict = _p({"usd": 1.0, "eur": 0.92, "gbp": 0.79, "jpy": 150.0}, ESTIMATE,
                          "rough exchange rates used only to price plans in other currencies; never to sum money")
    # Several subscriptions per customer: neither the guide nor the anchors publish a share, so these three are
    # estimates. Why plausible: SaaS sells add-ons (seats, modules, support plans) and Stripe bills each
    # subscription as its own invoice; businesses buy them, consumers rarely do. A quarter of business accounts
    # with an add-on, and a few percent of consumers (a second profile or a family plan), is conservative for
    # seat- and module-priced B2B products. Add-ons bill on the main plan's date (Stripe's billing_cycle_anchor
    # aligned, as most add-on flows do), so the card is charged for both at once: they fail or succeed together.
    several_subscriptions_share: dict = _p(
        {"b2c": 0.04, "b2b": 0.25}, ESTIMATE,
        "share of customers with more than one subscription (add-ons such as extra seats or modules billed as their "
        "own subscription, on the main plan's billing date), by kind; no published figure (see the comment)")
    add_on_subscriptions: tuple = _p((1, 2), ESTIMATE, "how many add-on subscriptions such a customer has")
    add_on_price_share: tuple = _p((0.1, 0.4), ESTIMATE, "an add-on's price as a share of the main plan's")
    usage_sigma: float = _p(0.5, ESTIMATE, "spread (log-normal sigma) of a usage invoice around its base amount")
    usage_spike_share: float = _p(0.08, GUIDE, "share of usage invoices that spike to 3-5x the usual charge",
                                  "A usage invoice that is 3x or 5x the customer's typical charge can hit card "
                                  "limits (the share is an estimate)")
    usage_spike_factor: tuple = _p((3.0, 5.0), GUIDE, "how large a spike is, as a multiple of the usual charge",
                                   "3x or 5x the customer's typical charge")

    # -- failures ---------------------------------------------------------------------------------------------
    invoice_failure_rate: float = _p(0.072, GUIDE, "chance that a renewal invoice's first charge fails",
                                     "7.2% of subscribers at risk of involuntary churn every single month (Recurly)")
    usage_spike_failure_multiplier: float = _p(2.5, GUIDE, "how much likelier a usage spike is to fail",
                                               "can hit card limits or get flagged for review (the multiple is an "
                                               "estimate)")
    card_declines: dict = _p({
        # decline_code: share among failed card charges
        "insufficient_funds": 0.34, "generic_decline": 0.13, "do_not_honor": 0.09, "processing_error": 0.03,
        "try_again_later": 0.02, "card_velocity_exceeded": 0.02,                        # card_soft 0.63
        "expired_card": 0.11, "incorrect_cvc": 0.02, "incorrect_number": 0.01,         # card_update 0.14
        "lost_card": 0.02, "stolen_card": 0.01, "fraudulent": 0.02, "transaction_not_allowed": 0.02,
        "advice:do_not_try_again": 0.02,                                                 # card_hard 0.09
        "authentication_required": 0.08,                                                 # action_required
        "card_declined": 0.06,                                                           # bare generic decline
    }, ESTIMATE, "mix of decline codes on failed card charges ('advice:X' is a generic_decline carrying Stripe's "
                 "advice_code X)")
    sca_multiplier: float = _p(2.0, ESTIMATE, "authentication_required is this much commoner for eur and gbp "
                                              "cards (Strong Customer Authentication)")
    ach_returns: dict = _p({
        "R01": 0.55, "R09": 0.05,                                                        # bank_soft
        "R02": 0.14, "R03": 0.05, "R04": 0.03, "R10": 0.10, "R16": 0.03, "R20": 0.05,  # bank_hard
    }, ESTIMATE, "mix of ACH return codes on failed bank debits")
    ach_return_business_days: tuple = _p((3, 5), GUIDE, "business days before an ACH return surfaces",
                                         "ACH returns can take 3 to 5 business days to surface")
    dispute_rate: dict = _p({"flat": 0.005, "usage": 0.03}, GUIDE,
                            "chance that a failed invoice's customer opens a dispute instead of paying",
                            "Higher dispute rates ... customers who have not been monitoring usage (rates are "
                            "estimates)")
    dispute_delay_days: tuple = _p((1, 6), ESTIMATE, "days after the failure that a dispute arrives")

    # -- retries ----------------------------------------------------------------------------------------------
    retry_recoverable: dict = _p({"card_soft": 0.38, "bank_soft": 0.45, "unknown": 0.28}, ESTIMATE,
                                 "share of soft declines whose funds or issuer come back so a plain retry can "
                                 "succeed (the rest need the customer); calibrated so retries alone recover ~21%")
    funds_return_median_days: float = _p(3.0, GUIDE, "median days until a soft decline's cause clears",
                                         "Three retries spread across 7 to 14 days outperform six retries in 48 "
                                         "hours (the median is an estimate)")
    funds_return_sigma: float = _p(0.9, ESTIMATE, "spread (log-normal sigma) of the time a soft decline takes to "
                                                  "clear")
    retry_success_when_clear: float = _p(0.85, ESTIMATE, "chance a retry succeeds once the cause has cleared")
    retry_success_after_update: float = _p(0.92, ESTIMATE,
                                           "chance a retry succeeds on a payment method the customer replaced")
    smart_retry_days: tuple = _p((1, 3, 5, 8), ESTIMATE,
                                 "when Stripe's Smart Retries try again (days after the failure, +-6h), when "
                                 "stripe.retries is 'stripe'; never for hard declines")
    card_updater_share: float = _p(0.40, GUIDE,
                                   "share of expired cards the network card updater refreshes by itself",
                                   "Card updater services ... reduce hard declines by 30% to 50%")
    card_updater_days: tuple = _p((1, 5), ESTIMATE, "days after the failure that the card updater refreshes a card")

    # -- what customers do ------------------------------------------------------------------------------------
    email_response: float = _p(0.1325, GUIDE,
                               "chance that a personalised day-0 email reaching the payer leads them to pay or "
                               "update the card",
                               "The day-of-failure email is the single highest-yield communication touchpoint "
                               "in dunning, with a 13.25% recovery rate (ChurnWard)")
    personalised_lift: float = _p(1.62, GUIDE,
                                  "a generic email (one whose template does not name the customer and what the "
                                  "charge was for) has 1/1.62 the chance of a personalised one",
                                  "Personalized emails are 62% more likely to receive a response than generic "
                                  "templated messaging")
    day_factor: tuple = _p(((0, 1.0), (2, 0.6), (7, 0.45), (14, 0.4)), GUIDE,
                           "multiplier on a message's effect by days since the first failure (from day N on)",
                           "The first 48 hours after a failure are the highest-yield window. After day 14, "
                           "recovery probability drops significantly (the factors are estimates)")
    repeat_factor: float = _p(0.75, ESTIMATE, "each earlier message on the same invoice multiplies the next one's "
                                              "effect by this (fatigue)")
    wrong_recipient_reach: float = _p(0.35, GUIDE,
                                      "on B2B accounts, chance that a message sent to the product user instead of "
                                      "the billing contact reaches someone who can pay",
                                      "Many failed payment notifications never reach the person who can actually "
                                      "update the card (the share is an estimate)")
    extra_step_loss: float = _p(0.25, GUIDE, "share of customers lost per extra step in the update flow: a "
                                             "billing-portal link is one step more than the hosted invoice page",
                                "Every additional step in the update flow loses 20% to 30% of customers")
    sms_response: float = _p(0.10, ESTIMATE, "chance that a day-0 SMS leads the customer to pay")
    escalation_response: dict = _p({"b2c": 0.20, "b2b": 0.40, "enterprise": 0.55}, GUIDE,
                                   "chance that a person following up (after an escalation) gets the invoice paid",
                                   "High-value accounts should trigger human escalation (the chances are "
                                   "estimates)")
    escalation_delay_days: tuple = _p((1, 4), ESTIMATE, "days a person takes to reach the customer")
    suspension_response: float = _p(0.55, GUIDE, "chance that a customer pays within days of losing service "
                                                 "(subscription paused)",
                                    "Human handoff Day 15+ Suspension logic (the chance is an estimate)")
    cancellation_winback: float = _p(0.05, ESTIMATE, "chance that a cancelled customer pays the open invoice")
    response_delay_median_hours: float = _p(5.0, ESTIMATE, "median delay between a message and the customer acting")
    response_delay_scale: float = _p(1.0, ESTIMATE, "multiplier on every delay before a customer acts (after a "
                                                    "message, a person's follow-up, lost service); a backtest fits "
                                                    "it to a ledger's hours from message to payment")
    organic_daily_rate: float = _p(0.0015, GUIDE, "daily chance that a customer pays with no prompt at all",
                                   "Teams without automation typically recover only 20% to 31% (the rate is "
                                   "an estimate well below that, since manual outreach is still outreach)")

    # -- pre-dunning (dunctl/notices): what happens before a payment fails -------------------------------------
    card_expiring_share: float = _p(0.04, ESTIMATE,
                                    "share of cards that expire in the simulation's first two months (cards are "
                                    "reissued every 3-5 years: about 2% a month)")
    notice_open_rate: float = _p(0.4741, GUIDE, "chance that a pre-dunning notice (card expiry, renewal, usage) is "
                                                "opened",
                                 "Pre-dunning emails sent 7 to 14 days before billing date achieve 47.41% open rates")
    expiry_update_given_open: float = _p(0.45, GUIDE,
                                         "chance that a customer who opened a card-expiry notice updates the card "
                                         "before it expires (two notices: about 38% of expiring cards)",
                                         "Card updater services ... reduce hard declines by 30% to 50% (the "
                                         "per-notice chance is an estimate placing two notices in that range)")
    renewal_reminder_cut_given_open: float = _p(0.30, ESTIMATE,
                                                "share of a renewal's failure chance removed when its customer "
                                                "opened a reminder (funds or card checked); no published figure")
    usage_alert_cut_given_open: float = _p(0.40, GUIDE,
                                           "share of a usage spike's extra failure chance removed when its customer "
                                           "opened a usage alert before the invoice",
                                           "proactive in-period usage alerts ... reduce surprise at billing time, "
                                           "which reduces both failure rates and dispute rates (the share is an "
                                           "estimate)")
    notice_action_days: tuple = _p((0, 3), ESTIMATE, "days between an opened notice and the customer acting on it")

    # -- net-terms B2B customers (dunctl/simulation/net_terms.py): invoices sent with payment terms -------------
    # Added to the book, never drawn from it: the card customers (and their luck) are the same with or without
    # them. Neither the guide nor the anchors cover invoices with terms; the published figures are surveys of all
    # B2B trade credit (Atradius) and of small businesses' invoices (Xero), so bands, not points.
    net_terms_share: float = _p(0.01, ESTIMATE,
                                "net-30 business customers added to the book, as a share of its size (billed by "
                                "invoice with `collection_method: send_invoice`, paying by transfer or on the "
                                "invoice page); no published figure for SaaS books billed through Stripe; kept "
                                "small so the demo stays cheap (5 of 500): `simulate --customers` for more")
    net_terms_currency_mix: dict = _p({"usd": 0.8, "gbp": 0.2}, ESTIMATE,
                                      "currency of the net-terms customers: a US or UK seller's invoiced business "
                                      "customers, in English (each language's reminders are templates the demo "
                                      "would compile: the card book already shows the other languages)")
    net_terms_days_until_due: int = _p(30, ISSUE, "payment terms of those invoices, in days (`days_until_due`)",
                                       "B2B customers on net-30 (`collection_method: send_invoice`)")
    net_terms_late_share: float = _p(0.45, PUBLISHED,
                                     "chance that a net-terms invoice would be paid after its due date with no "
                                     "reminder from dunctl (Stripe's own invoice email only)",
                                     "\"47% of B2B invoices are still paid late\" (Atradius Payment Practices "
                                     "Barometer 2025, Western Europe, https://atradius.jp/knowledge-and-research/"
                                     "news/what-did-a-year-of-b2b-payment-disruption-teach-us); \"almost half of "
                                     "all invoices are paid late\" (Xero, Australia, https://accountantsdaily.com.au"
                                     "/business/17521-overdue-invoices-cost-small-business-1-1bn-a-year); issue #26 "
                                     "says \"about a fifth of such invoices go unpaid past\" the due date; with the "
                                     "shipped reminders the model leaves about a third (docs/simulation.md)")
    net_terms_days_late_median: float = _p(14.0, PUBLISHED,
                                           "median days past the due date that a late invoice is paid, unprompted "
                                           "(log-normal)",
                                           "\"on average invoices are paid two weeks late\" (Xero, 12 million "
                                           "invoices, http://www.xero.com/us/small-business-guides/invoicing/"
                                           "invoice-payment-terms/)")
    net_terms_days_late_sigma: float = _p(0.9, PUBLISHED,
                                          "spread (log-normal sigma) of the days late: about one invoice in ten is "
                                          "paid over a month late",
                                          "\"almost half of all invoices are paid late, one in 10 by more than a "
                                          "month\" (Xero, https://accountantsdaily.com.au/business/17521-overdue-"
                                          "invoices-cost-small-business-1-1bn-a-year)")
    net_terms_never_pays: float = _p(0.02, PUBLISHED,
                                     "chance that a net-terms invoice is never paid unless a person follows it up",
                                     "\"uncollectable B2B receivables remained stable at 1.3%\" (Atradius Payment "
                                     "Practices Barometer 2018, Western Europe, https://atradius.cn/en/publications/"
                                     "); rounded up, since some of these pay once a person calls")
    net_terms_on_time_days: tuple = _p((10, 30), ESTIMATE,
                                       "days after issue that an invoice paid on time is paid (uniform, at most the "
                                       "terms); with the late ones, the mean days to pay is about 33",
                                       "\"just over 33 days to be paid on a 30-day invoice\" (Xero Small Business "
                                       "Insights, Australia 2019, https://www.kochiesbusinessbuilders.com.au/late-"
                                       "payment-times-improving-for-small-business-says-xero/)")
    net_terms_reminder_before: float = _p(0.30, ESTIMATE,
                                          "chance that a reminder before the due date (to an invoice still unpaid) "
                                          "gets it paid in the next payment run; each earlier reminder multiplies "
                                          "it by `repeat_factor`",
                                          "vendors claim reminders \"increase on-time payment by 35%\" and "
                                          "\"reduce average days to payment by 5-7 days\" (vendor marketing, "
                                          "https://www.quickbillmaker.com/blog/automated-invoice-reminders); the "
                                          "model's lift is well below those claims (docs/simulation.md, \"Net-terms "
                                          "customers\")")
    net_terms_reminder_after: float = _p(0.20, ESTIMATE,
                                         "chance that a reminder after the due date gets the invoice paid in the next "
                                         "payment run (times `repeat_factor` per earlier reminder)")
    net_terms_payment_run_days: tuple = _p((1, 5), ESTIMATE,
                                           "days between a prompt (a reminder, a person's call) and the money "
                                           "arriving: the customer's accounts-payable run and the transfer")


DEFAULT = Assumptions()

# What the model as a whole should reproduce with the shipped sequences. The figures come from the guide;
# `bench/bench_demo.py --calibrate` measures them, and docs/simulation.md records the measurement.
CALIBRATION_TARGETS = {
    "retries alone recover (share of failed invoices)": ("about 21%", "Silent retries recover roughly 21% of "
                                                        "failed payments (ChurnWard)"),
    "the day-0 email alone recovers": ("about 13%", "13.25% recovery rate (ChurnWard)"),
    "share of recoveries after day 14": ("about 42%", "42% of total recovery still happens beyond that point "
                                                     "(ChurnWard)"),
    "automated programme overall recovery": ("70-85%", "Automated dunning recovers 70% to 85% of failed payments"),
}


# -- presets: whose world the simulation plays ---------------------------------------------------------------------
#
# `top` is the guide's numbers as stated: its figures come from top performers (ChurnWard's 13.25% day-0 email,
# "70-85%" overall), and the model calibrated on them recovers about 80% with the shipped sequences. That is the
# top-performer end of what the anchors publish (../shared/anchor-figures.md), above every anchor's median.
# `median` is a median merchant's world: the same book, failures and mechanics, with customers who respond less,
# so that the shipped sequences land near the anchors' published medians. Each change names its anchor.

TOP = "top"
MEDIAN = "median"
DEFAULT_PRESET = MEDIAN

ANCHORS = "../shared/anchor-figures.md (published recovery figures, gathered 2026-11-25)"
MEDIAN_CHANGES: dict[str, tuple[object, str]] = {
    "retry_recoverable": ({"card_soft": 0.30, "bank_soft": 0.38, "unknown": 0.22},
                          "Churn Buster: retries recover \"15% on average\" (current docs), \"21% on average\" "
                          "(older docs), before any email"),
    "email_response": (0.055, "Gravy: \"85%... fail to respond\" to dunning emails; the guide's 13.25% is "
                              "ChurnWard's figure for the best day-0 email"),
    "sms_response": (0.05, "scaled down with email_response (no anchor publishes an SMS figure)"),
    "escalation_response": ({"b2c": 0.07, "b2b": 0.18, "enterprise": 0.32},
                            "scaled down so the whole programme lands at the median: Churn Buster \"median "
                            "customer reaching 50% overall recovery\""),
    "suspension_response": (0.16, "likewise: Churn Buster median 50%; Paddle \"50%+\"; Butter about 50% of failed "
                                  "payments; Recurly median 47.6% (secondary)"),
}
MEDIAN_TARGETS = {
    "retries alone recover (share of failed invoices)": ("15-21%", "Churn Buster: 15% (current), 21% (older)"),
    "automated programme overall recovery": ("about 50%", "Churn Buster median 50%; Paddle 50%+; Butter ~50%; "
                                                         "Recurly median 47.6% (secondary)"),
}
PRESETS: dict[str, Assumptions] = {
    TOP: DEFAULT,
    MEDIAN: replace(DEFAULT, **{name: value for name, (value, _) in MEDIAN_CHANGES.items()}),
}


def preset_assumptions(name: str) -> Assumptions:
    """The assumptions of a named preset; UsageError naming the presets for any other name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset '{name}'", f"use one of: {', '.join(PRESETS)} (docs/simulation.md, \"Calibration\")")


def preset_name(assumptions: Assumptions) -> str:
    return next((name for name, preset in PRESETS.items() if preset == assumptions), "custom")


def rows(assumptions: Assumptions = DEFAULT) -> list[dict]:
    """Every parameter as a row: name, value, source, meaning, quote."""
    out = []
    for f in fields(assumptions):
        out.append({"name": f.name, "value": getattr(assumptions, f.name), **f.metadata})
    return out


def _value_text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_value_text(v)}" for k, v in value.items())
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return ", ".join(f"d{a}+: {b}" for a, b in value)
    if isinstance(value, tuple):
        return "-".join(str(v) for v in value)
    return str(value)


def markdown_table(assumptions: Assumptions = DEFAULT) -> str:
    """The assumptions table for docs/simulation.md."""
    lines = ["| parameter | value (`top`) | meaning | source |", "|---|---|---|---|"]
    for row in rows(assumptions):
        source = "guide" if row["source"] == GUIDE else row["source"]
        if row["quote"]:
            source += f": \"{row['quote']}\""
        lines.append(f"| `{row['name']}` | {_value_text(row['value'])} | {row['meaning']} | {source} |")
    return "\n".join(lines)


def median_table() -> str:
    """What the `median` preset changes, with the anchor each change rests on (docs/simulation.md, "Calibration")."""
    lines = ["| parameter | `top` | `median` | anchor |", "|---|---|---|---|"]
    for name, (value, anchor) in MEDIAN_CHANGES.items():
        lines.append(f"| `{name}` | {_value_text(getattr(DEFAULT, name))} | {_value_text(value)} | {anchor} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table())
    print()
    print(median_table())
