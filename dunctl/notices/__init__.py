"""Pre-dunning: notices sent before a payment fails (an expiring card, an upcoming renewal, a usage spike).

    config.py     the `notices:` section of dunctl.yaml
    check.py      `dunctl check`: every enabled notice's template renders against a sample
    planner.py    which notices are due for one subscription: pure, no I/O, no clock
    context.py    what a notice template may use
    run.py        a tick's notice work: plan changed subscriptions, preview metered usage, send what is due
                  through the tick's one executor (claim -> act -> record)

Kinds and their once-only keys (kind, object, period, offset) live in the ledger's `notices` table.
"""

CARD_EXPIRING, UPCOMING_RENEWAL, USAGE_ALERT, LARGE_CHARGE = \
    "card_expiring", "upcoming_renewal", "usage_alert", "large_charge"
KINDS = (CARD_EXPIRING, UPCOMING_RENEWAL, USAGE_ALERT, LARGE_CHARGE)
