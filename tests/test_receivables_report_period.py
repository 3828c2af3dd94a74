"""What `report` and the month-end journal put in a period, through the real CLI against the fake Stripe: promises
kept and broken, and cases a person closed as collected, settled or written off, count in the period they ended
(a promise still open at the end of November shows as open in November); a partial payment is booked on the day
Stripe recorded it, not the day a late tick saw it."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, cli
from tests.servers import smtp_server  # noqa: F401  (fixture)
from tests.test_receivables import DAY, books  # noqa: F401  (fixture)

HOUR = timedelta(hours=1)


def test_promises_and_closed_cases_are_counted_in_the_period_they_ended(books, fake_stripe):
    kept = books.issue("acme", 100000, due=T0 + 7 * DAY)
    broken = books.issue("globex", 60000, due=T0 + 7 * DAY)
    collected = books.issue("initech", 40000, due=T0 + 7 * DAY)
    settled = books.issue("hooli", 50000, due=T0 + 7 * DAY)
    books.tick(T0 + HOUR)                                                # Nov 2: the four cases open
    on_nov_3 = ["--now", (T0 + DAY).isoformat()]
    for invoice, until in ((kept, "2026-11-20"), (broken, "2026-12-03")):
        promised = cli(books.config, "case", "promise", invoice, "--until", until, *on_nov_3)
        assert promised.exit_code == 0, promised.output
    fake_stripe.customer_pays(kept, at=T0 + 13 * DAY, out_of_band=True)
    books.tick(T0 + 14 * DAY + HOUR)                                     # Nov 16: kept
    assert cli(books.config, "case", "close", collected, "-r", "agency", "--as", "collected", "--now",
               (T0 + 23 * DAY).isoformat()).exit_code == 0               # Nov 25
    books.tick(T0 + 32 * DAY + HOUR)                                     # Dec 4: the end of Dec 3 passed: broken
    assert cli(books.config, "case", "close", settled, "-r", "agreed", "--as", "settled", "--amount", "300",
               "--now", (T0 + 33 * DAY).isoformat()).exit_code == 0      # Dec 5

    def counted(since: str, until: str) -> tuple:
        report = cli(books.config, "report", "--json", "--since", since, "--until", until, "--now",
                     (T0 + 40 * DAY).isoformat())
        assert report.exit_code == 0, report.output
        section = json.loads(report.stdout)["receivables"]
        return section["promises"], [(r["outcome"], r["count"], r["received"], r["written_off"])
                                     for r in section["closed_as"]]

    assert counted("2026-11-01", "2026-12-01") == ({"kept": 1, "open": 1}, [("collected", 1, 40000, 0)])
    assert counted("2026-12-01", "2027-01-01") == ({"broken": 1}, [("settled", 1, 30000, 20000)])
    assert counted("2026-11-01", "2027-01-01") == ({"kept": 1, "broken": 1},
                                                   [("collected", 1, 40000, 0), ("settled", 1, 30000, 20000)])


def test_a_partial_payment_is_booked_on_the_day_stripe_recorded_it_even_when_the_tick_runs_a_day_late(books,
                                                                                                     fake_stripe):
    invoice = books.issue("acme", 100000, due=T0 + 7 * DAY)
    books.tick(T0 + HOUR)                                                # Nov 2: the case opens
    fake_stripe.pay_part(invoice, 40000, at=T0 + 28 * DAY + 8 * HOUR)    # Nov 30, 22:00 UTC
    books.tick(T0 + 29 * DAY + HOUR)                                     # cron was down: Dec 1, 15:00
    fake_stripe.customer_pays(invoice, at=T0 + 30 * DAY, out_of_band=True)
    books.tick(T0 + 30 * DAY + HOUR)

    def booked(since: str, until: str) -> list[tuple]:
        journal = cli(books.config, "report", "--journal", "--since", since, "--until", until, "--json")
        assert journal.exit_code == 0, journal.output
        return [(e["date"], e["invoice_id"], e["kind"], e["amount_minor"]) for e in json.loads(journal.stdout)["entries"]]

    assert booked("2026-11-01", "2026-12-01") == [("2026-11-30", invoice, "partial_payment", 40000)]
    assert booked("2026-12-01", "2027-01-01") == [("2026-12-02", invoice, "recovery", 60000)]
    seen = [e["at"] for e in books.show(invoice)["timeline"] if e["kind"] == "partial"]
    assert seen == ["2026-12-01T15:00:00Z"]                              # the case's timeline: when dunctl saw it


def test_a_partial_payment_read_by_a_backfill_is_still_booked_on_the_day_stripe_recorded_it(books, fake_stripe):
    """Cron down for more than the 30 days Stripe keeps events: the sync reads the invoice from a listing, with no
    event to date the payment; the invoice's paid payments do."""
    invoice = books.issue("acme", 100000, due=T0 + 7 * DAY)
    books.tick(T0 + HOUR)                                                # Nov 2: the case opens
    fake_stripe.pay_part(invoice, 40000, at=T0 + 28 * DAY + 8 * HOUR)    # Nov 30, 22:00 UTC
    books.tick(T0 + 40 * DAY + HOUR)                                     # Dec 12: the next tick, a backfill
    journal = cli(books.config, "report", "--journal", "--since", "2026-11-01", "--until", "2026-12-01", "--json")
    assert [(e["date"], e["kind"], e["amount_minor"]) for e in json.loads(journal.stdout)["entries"]] == \
        [("2026-11-30", "partial_payment", 40000)]
