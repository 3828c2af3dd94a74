"""`report --since/--until` counts promises kept and broken, and cases a person closed as collected, settled or
written off, in the period they ended (through the real CLI against the fake Stripe): November's report holds
November's, December's December's, and a promise still open at the end of November shows as open in November."""

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
