"""A person closes a net-terms case saying how it ended (collected, settled for an amount, written off), through
the real CLI against the fake Stripe: the outcome is stored, shown by `case show` and `status --all`, counted by
`report`, and booked by the month-end journal, whose sums equal the report's recovered amount."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, cli
from tests.servers import smtp_server  # noqa: F401  (fixture)
from tests.test_receivables import DAY, books  # noqa: F401  (fixture)


def test_a_person_closes_cases_as_collected_settled_or_written_off_and_the_journal_books_each(books, fake_stripe):
    collected = books.issue("acme", 100000, due=T0 + 7 * DAY)
    settled = books.issue("globex", 100000, due=T0 + 7 * DAY)
    written_off = books.issue("initech", 40000, due=T0 + 7 * DAY)
    books.tick(T0 + timedelta(hours=1))                                  # the three cases open, a week before due
    now = ["--now", (T0 + 2 * DAY).isoformat()]
    close = ("case", "close")
    too_much = cli(books.config, *close, settled, "-r", "agreed", "--as", "settled", "--amount", "1500", *now)
    assert too_much.exit_code == 2 and "--amount 1500 is more than the $1,000.00 left" in too_much.stderr
    no_amount = cli(books.config, *close, settled, "-r", "agreed", "--as", "settled", *now)
    assert no_amount.exit_code == 2 and "--as settled needs the amount agreed" in no_amount.stderr
    assert cli(books.config, *close, settled, "-r", "x", "--as", "forgiven", *now).exit_code == 2

    for invoice, how in ((collected, ["--as", "collected"]), (settled, ["--as", "settled", "--amount", "600"]),
                         (written_off, ["--as", "written-off"])):
        done = cli(books.config, *close, invoice, "-r", "agency report 12", *how, *now)
        assert done.exit_code == 0, done.output

    case = books.show(settled)
    assert (case["case"]["state"], case["case"]["closed_as"], case["case"]["settled_amount"]) == \
        ("closed", "settled", 60000)
    assert case["timeline"][-1]["summary"] == ("closed by a person as settled: $600.00 received, $400.00 written "
                                               "off: agency report 12")
    status = {c["invoice_id"]: c["closed_as"] for c in
              json.loads(cli(books.config, "status", "--all", "--json").stdout)["cases"]}
    assert status == {collected: "collected", settled: "settled", written_off: "written_off"}
    assert "closed: settled" in cli(books.config, "status", "--all", env={"COLUMNS": "200"}).stdout

    journal = json.loads(cli(books.config, "report", "--journal", "--since", "2026-11-01", "--until", "2026-12-01",
                             "--json").stdout)
    assert [(e["invoice_id"], e["kind"], e["amount"], e["collected_by"]) for e in journal["entries"]] == sorted(
        [(collected, "recovery", "1000.00", "collections"), (settled, "settlement", "600.00", "collections"),
         (settled, "write_off", "400.00", "person"), (written_off, "write_off", "400.00", "person")],
        key=lambda e: (e[0], e[1]))
    report = json.loads(cli(books.config, "report", "--json", "--since", "2026-11-01", "--until", "2026-12-01",
                            "--now", (T0 + 3 * DAY).isoformat()).stdout)          # the journal's period
    [usd] = report["headline"]["currencies"]
    booked = journal["totals_minor"]["usd"]
    assert booked["recovery"] + booked["settlement"] == usd["amount_recovered"] == 160000
    assert [(r["outcome"], r["count"], r["received"], r["written_off"]) for r in
            report["receivables"]["closed_as"]] == [("collected", 1, 100000, 0), ("settled", 1, 60000, 40000),
                                                     ("written_off", 1, 0, 40000)]
    assert booked["write_off"] == 80000
