"""Net-terms receivables end to end: invoices sent with payment terms (collection_method send_invoice) on the fake
Stripe, through the real CLI and a real SMTP server: reminders before the due date with the invoice and PDF
links, the overdue sequence, a partial payment, a due date moved in Stripe, a payment in full."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, cli, sent_as, starter
from tests.servers import smtp_server  # noqa: F401  (fixture)

DAY = timedelta(days=1)
ENV = {"STRIPE_API_KEY": TEST_KEY}


class Books:
    """A B2B account on net 30 with the starter config pointed at the fake Stripe and an SMTP server."""

    def __init__(self, tmp_path, fake, smtp):
        self.fake, self.smtp = fake, smtp
        self.config = starter(tmp_path, **{"stripe.api_base": fake.url,
                                           "channels.email": {"transport": "smtp", "host": smtp.host,
                                                              "port": smtp.port}})
        fake.set_now(T0)

    def issue(self, name: str, amount: int, *, due=T0 + 30 * DAY) -> str:
        customer = self.fake.add_customer(f"ap@{name}.test", name=name.title(),
                                          metadata={"billing_email": f"ap@{name}.test"})
        return self.fake.create_invoice(customer, amount=amount, collection_method="send_invoice", due_date=due,
                                        at=T0)

    def tick(self, when):
        self.fake.set_now(when)
        result = cli(self.config, "tick", "--now", when.isoformat(), env=ENV)
        assert result.exit_code == 0, result.output
        return result

    def mail(self) -> list[tuple[str, str, str, str]]:
        """(invoice, step, subject, text) of every email received so far, and forget them."""
        found = []
        for received in self.smtp.received:
            message = received.message
            invoice, step = sent_as(self.config, message)
            text = message.get_body(("plain",)).get_content()
            found.append((invoice, step, str(message["Subject"]), text))
        self.smtp.received.clear()
        return sorted(found)

    def show(self, invoice: str) -> dict:
        result = cli(self.config, "case", "show", invoice, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def books(tmp_path, fake_stripe, smtp_server):
    return Books(tmp_path, fake_stripe, smtp_server)


def test_net_30_invoices_get_reminders_before_and_after_their_due_date(books, fake_stripe):
    paid = books.issue("acme", 250000)                                  # pays in full three days late
    partial = books.issue("globex", 120000)                             # pays part, the rest goes on
    moved = books.issue("initech", 80000)                               # given ten more days
    books.tick(T0 + 1 * DAY)
    assert books.mail() == []                                           # 29 days before the due date: nothing
    assert json.loads(cli(books.config, "status", "--json").stdout)["cases"] == []

    fake_stripe.move_due_date(moved, T0 + 40 * DAY, at=T0 + 20 * DAY)
    books.tick(T0 + 23 * DAY + 1 * timedelta(hours=1))                  # a week before Dec 2
    sent = books.mail()
    assert [(i, s) for i, s, _, _ in sent] == [(paid, "due-in-7d"), (partial, "due-in-7d")]
    _, _, subject, text = sent[0]
    assert subject == f"Invoice {fake_stripe.invoice(paid)['number']} ($2,500.00) is due on December 2, 2026"
    assert f"Pay online: {fake_stripe.invoice(paid)['hosted_invoice_url']}" in text
    assert f"Download the PDF: {fake_stripe.invoice(paid)['invoice_pdf']}" in text

    books.tick(T0 + 29 * DAY + timedelta(hours=1))
    assert [(i, s) for i, s, _, _ in books.mail()] == [(paid, "due-in-1d"), (partial, "due-in-1d")]

    books.tick(T0 + 31 * DAY + timedelta(hours=1))
    overdue = books.mail()
    assert [(i, s) for i, s, _, _ in overdue] == [(paid, "overdue-1d"), (partial, "overdue-1d")]
    assert "it was due on December 2, 2026" in overdue[0][3]

    fake_stripe.customer_pays(paid, at=T0 + 32 * DAY, out_of_band=True)
    books.tick(T0 + 33 * DAY + timedelta(hours=1))                      # a week before the moved due date
    assert [(i, s) for i, s, _, _ in books.mail()] == sorted([(moved, "due-in-7d"), (paid, "recovered")])  # thanks

    fake_stripe.pay_part(partial, 50000, at=T0 + 34 * DAY)
    books.tick(T0 + 37 * DAY + timedelta(hours=1))
    assert books.show(paid)["case"]["state"] == "recovered"
    [(invoice, step, subject, text)] = books.mail()
    assert (invoice, step) == (partial, "overdue-7d")
    assert "($500.00 already received, thank you; $700.00 left to pay)" in text
    assert "now 7 days past its due date" in text
    timeline = [(e["kind"], e["summary"]) for e in books.show(partial)["timeline"]]
    assert ("partial", "amount remaining now $700.00 (was $1,200.00; $500.00 paid so far): the case goes on for "
                       "what is left") in timeline
    moved_timeline = [(e["kind"], e["summary"]) for e in books.show(moved)["timeline"]]
    number = fake_stripe.invoice(moved)["number"]
    assert moved_timeline[0] == ("due", f"invoice due: $800.00 ({number}, net terms)")
    assert ("due_date", "due date moved from 2026-12-02 to 2026-12-12: the remaining steps count from the new "
                        "date") not in moved_timeline   # moved before its case opened: it opened on the new date
    assert books.show(moved)["case"]["first_failed_at"] == "2026-12-12T14:00:00Z"

    fake_stripe.move_due_date(moved, T0 + 50 * DAY, at=T0 + 38 * DAY)   # ten more days, with its case open
    books.tick(T0 + 39 * DAY + timedelta(hours=1))                      # the day before the old due date
    assert books.mail() == []
    case = books.show(moved)
    assert ("due_date", "due date moved from 2026-12-12 to 2026-12-22: the remaining steps count from the new "
                        "date") in [(e["kind"], e["summary"]) for e in case["timeline"]]
    assert (case["case"]["next_step"], case["case"]["next_due_at"]) == ("due-in-1d", "2026-12-21T14:00:00Z")

    journal = json.loads(cli(books.config, "report", "--journal", "--since", "2026-12-01", "--until", "2027-01-01",
                             "--json").stdout)

    def line(invoice: str, name: str, date: str, kind: str, amount: str, minor: int) -> dict:
        stripe = fake_stripe.invoice(invoice)
        return {"date": date, "customer_id": stripe["customer"], "customer_name": name,
                "invoice_number": stripe["number"], "invoice_id": invoice, "currency": "usd", "amount": amount,
                "amount_minor": minor, "kind": kind, "collected_by": "customer", "stripe_ids": invoice}

    assert journal["entries"] == [line(paid, "Acme", "2026-12-04", "recovery", "2500.00", 250000),
                                  # paid on Dec 6 (Stripe's time), seen by the tick of Dec 9
                                  line(partial, "Globex", "2026-12-06", "partial_payment", "500.00", 50000)]
    assert journal["totals_minor"] == {"usd": {"recovery": 250000, "partial_payment": 50000}}
    report = json.loads(cli(books.config, "report", "--json", "--now", (T0 + 40 * DAY).isoformat()).stdout)
    [usd] = report["headline"]["currencies"]
    assert journal["totals_minor"]["usd"]["recovery"] == usd["amount_recovered"] == 250000


def test_a_credit_note_reduces_a_net_terms_case_and_a_void_or_write_off_in_stripe_ends_it(books, fake_stripe):
    credited = books.issue("acme", 100000, due=T0 + 7 * DAY)
    written_off = books.issue("globex", 60000, due=T0 + 7 * DAY)
    books.tick(T0 + timedelta(hours=1))                                  # a week before: both open, reminded
    assert [(i, s) for i, s, _, _ in books.mail()] == sorted([(credited, "due-in-7d"), (written_off, "due-in-7d")])

    fake_stripe.credit(credited, 30000, at=T0 + 2 * DAY)
    books.tick(T0 + 2 * DAY + timedelta(hours=1))
    case = books.show(credited)
    assert case["case"]["amount_remaining"] == 70000
    assert ("partial", "amount remaining now $700.00 (was $1,000.00; $300.00 credited): the case goes on for what "
                       "is left") in [(e["kind"], e["summary"]) for e in case["timeline"]]

    fake_stripe.void(credited, at=T0 + 3 * DAY)
    fake_stripe.mark_uncollectible(written_off, at=T0 + 3 * DAY)
    books.tick(T0 + 3 * DAY + timedelta(hours=1))
    assert (books.show(credited)["case"]["state"], books.show(written_off)["case"]["state"]) == \
        ("voided", "written_off")
    assert [(i, s) for i, s, _, _ in books.mail()] == [(written_off, "ended-notice")]   # to collections@
    books.tick(T0 + 6 * DAY + timedelta(hours=1))
    assert books.mail() == []                                            # no reminder the day before: it ended
    booked = cli(books.config, "report", "--journal", "--since", "2026-11-01", "--until", "2026-12-01").stdout
    assert booked.splitlines() == [
        "date,customer_id,customer_name,invoice_number,invoice_id,currency,amount,amount_minor,kind,collected_by,"
        "stripe_ids",
        f"2026-11-05,{fake_stripe.invoice(written_off)['customer']},Globex,{fake_stripe.invoice(written_off)['number']},"
        f"{written_off},usd,600.00,60000,write_off,stripe,{written_off}"]


def test_promises_hold_an_invoice_until_kept_or_broken_and_a_dispute_until_a_person_resumes_it(books,
                                                                                               fake_stripe):
    kept = books.issue("acme", 100000, due=T0 + 7 * DAY)
    broken = books.issue("globex", 60000, due=T0 + 7 * DAY)
    disputed = books.issue("initech", 40000, due=T0 + 7 * DAY)
    books.tick(T0 + timedelta(hours=1))
    assert len(books.mail()) == 3                                         # the three reminders a week before
    now = (T0 + 2 * DAY).isoformat()
    assert cli(books.config, "case", "promise", kept, "--until", "2026-11-12", "--now", now).exit_code == 0
    promised = cli(books.config, "case", "promise", broken, "--until", "2026-11-10", "--amount", "600",
                   "--now", now, "--json")
    assert promised.exit_code == 0, promised.output
    assert json.loads(promised.stdout)["held_because"] == \
        "held for the customer's promise to pay $600.00 by 2026-11-10"
    assert cli(books.config, "case", "dispute", disputed, "--reason", "wrong PO number", "--now", now).exit_code == 0
    too_much = cli(books.config, "case", "promise", kept, "--until", "2026-11-12", "--amount", "5000", "--now", now)
    assert too_much.exit_code == 2 and "more than the $1,000.00 left" in too_much.stderr

    books.tick(T0 + 8 * DAY + timedelta(hours=1))                         # a day past due: every invoice held
    assert books.mail() == []
    status = {c["invoice_id"]: c for c in json.loads(cli(books.config, "status", "--json").stdout)["cases"]}
    assert status[disputed]["held_because"] == ("held for the customer's dispute of the invoice (wrong PO number) "
                                                "until a person resumes the case")

    fake_stripe.customer_pays(kept, at=T0 + 8 * DAY + timedelta(hours=2), out_of_band=True)
    books.tick(T0 + 9 * DAY + timedelta(hours=1))                         # the end of Nov 10 has passed
    sent = books.mail()
    assert [(i, s) for i, s, _, _ in sent] == sorted([(broken, "overdue-1d"), (broken, "promise-broken-2"),
                                                      (kept, "recovered")])
    told = next(text for _, step, _, text in sent if step == "promise-broken-2")
    assert f"Promise broken: {fake_stripe.invoice(broken)['number']} was promised by 2026-11-10; $600.00 still " \
           "open" in told
    assert books.show(kept)["case"]["state"] == "recovered"

    assert cli(books.config, "case", "resume", disputed, "-r", "PO fixed", "--now",
               (T0 + 9 * DAY + timedelta(hours=2)).isoformat()).exit_code == 0
    books.tick(T0 + 10 * DAY + timedelta(hours=1))
    assert [(i, s) for i, s, _, _ in books.mail()] == [(disputed, "overdue-1d")]     # back to its sequence
    report = json.loads(cli(books.config, "report", "--json", "--now", (T0 + 10 * DAY).isoformat()).stdout)
    assert (report["receivables"]["promises"], report["receivables"]["disputes"]) == \
        ({"kept": 1, "broken": 1}, {"lifted": 1})

    books.tick(T0 + 14 * DAY + timedelta(hours=1))
    assert [(i, s) for i, s, _, _ in books.mail()] == sorted([(broken, "overdue-7d"), (disputed, "overdue-7d")])
    books.tick(T0 + 21 * DAY + timedelta(hours=1))       # 14 days past due: the final reminder announces the hand-off
    finals = books.mail()
    assert [(i, s) for i, s, _, _ in finals] == sorted([(broken, "overdue-14d"), (disputed, "overdue-14d")])
    assert "If it is still unpaid on December 24, 2026, we will pass it to our collections agency at the end of " \
           "that day." in finals[0][3]

    books.tick(T0 + 37 * DAY + timedelta(hours=1))       # 30 days past due: a statement
    statements = books.mail()
    assert [(i, s) for i, s, _, _ in statements] == sorted([(broken, "statement"), (disputed, "statement")])
    text = next(text for i, _, _, text in statements if i == broken)
    assert f"  {fake_stripe.invoice(broken)['number']}, due November 9, 2026 (30 days overdue): $600.00\n" in text
    assert "  Total open: $600.00" in text

    books.tick(T0 + 52 * DAY + timedelta(hours=1))                         # 45 days past due: to collections
    assert sorted((i, s) for i, s, _, _ in books.mail()) == sorted([(broken, "collections"),
                                                                    (disputed, "collections")])
    assert books.show(broken)["case"]["state"] == "open"     # the hand-off waits for the end of the day announced
    books.tick(T0 + 53 * DAY + timedelta(hours=1))        # the next day's tick: later than grace, never missed
    handed = books.show(broken)
    assert (handed["case"]["state"], handed["case"]["with_person"]) == ("paused", 1)
    assert handed["case"]["held_because"] == f"with collections since 2026-12-25 (packet {broken}.json): a person " \
                                             "closes it"
    sent_packet = json.loads((books.config.parent / "collections" / f"{broken}.json").read_text())
    assert sent_packet["invoice"]["id"] == broken and sent_packet["holds"][0]["outcome"] == "broken"

    exported = cli(books.config, "case", "export", broken, "--dir", str(books.config.parent / "packets"), "--json",
                   "--now", (T0 + 54 * DAY).isoformat())
    assert exported.exit_code == 0, exported.output
    packet = json.loads((books.config.parent / "packets" / f"{broken}.json").read_text())
    assert (packet["invoice"]["amount_remaining"], packet["customer"]["billing_email"]) == (60000, "ap@globex.test")
    assert [m["step"] for m in packet["messages"]] == ["due-in-7d", "overdue-1d", "overdue-7d", "overdue-14d",
                                                       "statement"]
    assert {m["to"] for m in packet["messages"]} == {"ap@globex.test"}
    assert "it was due on November 9, 2026" in packet["messages"][1]["text"]
    # the statement in the packet lists the open invoice as the email did (the packet renders each message again)
    assert "  Total open: $600.00" in packet["messages"][4]["text"]
    assert [(h["kind"], h["outcome"], h["amount"]) for h in packet["holds"]] == [("promise", "broken", 60000)]
    assert "exported" in [t["kind"] for t in books.show(broken)["timeline"]]
    page = (books.config.parent / "packets" / f"{broken}.html").read_text()
    assert "$600.00 open" in page and "promise recorded" in page


def test_a_net_terms_invoice_is_charged_only_when_its_sequence_retries_and_the_customer_has_a_card(
        tmp_path, fake_stripe, smtp_server):
    """A sequence may ask to charge a net-terms invoice (`retry`): dunctl does it for a customer with a payment
    method on file; for one without, the step waits, saying why (nothing to charge until a card is added)."""
    books = Books(tmp_path, fake_stripe, smtp_server)
    (tmp_path / "sequences" / "net-terms.yaml").write_text(
        "name: net-terms\nsteps:\n  - {id: charge, at: 3d, action: retry}\n")
    config = (tmp_path / "dunctl.yaml").read_text().replace("retries: stripe", "retries: dunctl")
    (tmp_path / "dunctl.yaml").write_text(config)
    with_card = books.issue("acme", 50000, due=T0 + 7 * DAY)
    fake_stripe.add_payment_method(fake_stripe.invoice(with_card)["customer"])
    without = books.issue("globex", 50000, due=T0 + 7 * DAY)
    books.tick(T0 + timedelta(hours=1))                                  # cases open at the due date (no step before)
    books.tick(T0 + 7 * DAY + timedelta(hours=1))
    assert fake_stripe.count("POST /v1/invoices/:id/pay") == 0          # nothing due yet, nothing charged
    fake_stripe.next_payment_succeeds(with_card)
    books.tick(T0 + 10 * DAY + timedelta(hours=1))
    assert fake_stripe.count("POST /v1/invoices/:id/pay") == 1
    assert books.show(with_card)["case"]["state"] == "recovered"
    waiting = books.show(without)["waiting"]                             # it waits for a card, never charged
    assert [(w["step"], w["why"]) for w in waiting] == [("charge", "a net-terms invoice with no payment method on file")]


def test_in_monitor_mode_net_terms_reminders_are_planned_and_recorded_never_sent(tmp_path, fake_stripe,
                                                                                 smtp_server):
    books = Books(tmp_path, fake_stripe, smtp_server)
    config = books.config.read_text().replace("mode: live", "mode: monitor")
    books.config.write_text(config)
    invoice = books.issue("acme", 50000, due=T0 + 7 * DAY)
    books.tick(T0 + timedelta(hours=1))
    assert books.mail() == []
    assert [(a["step_id"], a["status"]) for a in books.show(invoice)["actions"]] == [("due-in-7d", "would")]
