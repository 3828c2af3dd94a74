"""A new ledger, or one restored from a backup older than the last emails, never sends them again (issue 20, item
10). dunctl leaves on each Stripe invoice it works the ledger's id and the last customer message delivered; a
restored ledger takes that history over, and another ledger is refused until it adopts the invoices."""

from __future__ import annotations

import shutil
import sqlite3

from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, at, cli, open_engine_ledger, starter
from tests.test_stripe_tick import world  # noqa: F401  (fixture)

ENV = {"STRIPE_API_KEY": TEST_KEY}


def _config(directory, fake, smtp):
    directory.mkdir(exist_ok=True)
    return starter(directory, ledger=False, **{
        "stripe.api_base": fake.url,
        "channels.email": {"transport": "smtp", "host": smtp.host, "port": smtp.port}})


def _tick(config, fake, when, *extra):
    fake.set_now(at(when))
    return cli(config, "tick", "--now", at(when).isoformat(), *extra, env=ENV)


def _sent(smtp) -> list[str]:
    return [r.message["Subject"] for r in smtp.received]


def _statuses(config, invoice_id) -> dict[str, tuple[str, str | None]]:
    ledger = open_engine_ledger(config)
    try:
        case = ledger.cases.for_invoice(invoice_id)
        return {a["step_id"]: (a["status"], a["detail"]) for a in ledger.actions(case["id"]) if a["kind"] == "step"}
    finally:
        ledger.close()


def test_a_ledger_restored_from_before_the_last_emails_sends_none_of_them_again(tmp_path, fake_stripe, smtp_server):
    config = _config(tmp_path, fake_stripe, smtp_server)
    fake_stripe.set_now(T0)
    invoice = fake_stripe.fail_invoice(at=T0)
    first = _tick(config, fake_stripe, "31m", "--new-ledger")                   # the day-0 notice
    assert first.exit_code == 0, first.output
    backup = tmp_path / "backup.db"
    with sqlite3.connect(tmp_path / "dunctl.db") as live, sqlite3.connect(backup) as copy:
        live.backup(copy)                                                       # last night's copy
    reminder = _tick(config, fake_stripe, "3d1m")                               # the day-3 reminder
    assert reminder.exit_code == 0, reminder.output
    assert len(_sent(smtp_server)) == 2
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"dunctl.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, tmp_path / "dunctl.db")                             # restored

    restored = _tick(config, fake_stripe, "3d2m")
    assert restored.exit_code == 0, restored.output
    assert len(_sent(smtp_server)) == 2, _sent(smtp_server)                     # the reminder is not sent again
    assert "behind Stripe" in restored.stderr and "reminder" in restored.stderr
    assert len(restored.stderr.strip().splitlines()) == 1, restored.stderr
    status, detail = _statuses(config, invoice)["reminder"]
    assert status == "done" and "before this ledger was restored" in detail
    # and the sequence goes on from there: the day-4 update link comes on time, once
    assert _tick(config, fake_stripe, "4d1m").exit_code == 0
    assert len(_sent(smtp_server)) == 3
    assert _tick(config, fake_stripe, "4d2m").stderr == ""                      # taken over once
    # what dunctl leaves on the invoice: one request per email, none otherwise
    assert fake_stripe.count("POST /v1/invoices/:id") == len(_sent(smtp_server)) == 3
    assert {k: v for k, v in fake_stripe.invoice(invoice)["metadata"].items() if k.startswith("dunctl")} == {
        "dunctl_ledger": open_engine_ledger(config).get_state("ledger_id"), "dunctl_last_message": "update-link",
        "dunctl_last_message_at": at("4d1m").isoformat().replace("+00:00", "Z")}


def test_a_second_ledger_is_refused_until_it_adopts_and_then_sends_only_what_comes_next(tmp_path, fake_stripe,
                                                                                       smtp_server):
    first = _config(tmp_path / "a", fake_stripe, smtp_server)
    fake_stripe.set_now(T0)
    invoice = fake_stripe.fail_invoice(at=T0)
    assert _tick(first, fake_stripe, "31m", "--new-ledger").exit_code == 0     # ledger A sends the notice
    assert len(_sent(smtp_server)) == 1
    ledger_a = open_engine_ledger(first).get_state("ledger_id")

    second = _config(tmp_path / "b", fake_stripe, smtp_server)                  # a new machine, a new ledger
    refused = _tick(second, fake_stripe, "1h", "--new-ledger")
    assert refused.exit_code == 2, refused.output
    assert ledger_a in refused.stderr and "dunctl tick --adopt" in refused.stderr and "Traceback" not in refused.output
    assert len(_sent(smtp_server)) == 1
    assert _tick(second, fake_stripe, "1h").exit_code == 2                      # refused until adopted knowingly

    adopted = _tick(second, fake_stripe, "1h", "--adopt")
    assert adopted.exit_code == 0, adopted.output
    assert len(_sent(smtp_server)) == 1                                         # the notice is not sent again
    assert f"adopted 1 invoice(s) from ledger {ledger_a}" in adopted.stderr
    status, detail = _statuses(second, invoice)["notice"]
    assert status == "done" and f"sent by ledger {ledger_a} before adoption" in detail
    ledger_b = open_engine_ledger(second)
    case = ledger_b.cases.for_invoice(invoice)                   # delivered when ledger A sent it, for the contact
    assert ledger_b.cases.customer_contacts(case["customer_id"], T0) == [at("31m")]   # policy and suspension notice
    ledger_b.close()

    assert _tick(second, fake_stripe, "3d1m").exit_code == 0                    # the reminder, on time
    assert len(_sent(smtp_server)) == 2
    assert _statuses(second, invoice)["reminder"][0] == "done"


def test_a_note_stripe_refused_is_tried_again_when_the_case_is_next_due(world, fake_stripe):
    w = world("stripe")
    invoice = fake_stripe.fail_invoice(at=T0)
    fake_stripe.inject(500, times=20, route="POST /v1/invoices/:id")
    first = w.tick(at("31m"))
    assert w.actions(invoice) == {"notice": "done", "mark-notice": "failed"}      # the email went out all the same
    assert [a.step for a in first.failed] == ["mark-notice"]
    fake_stripe.calm()
    w.tick(at("2d1m"))                                                            # retry-1: the case is due again
    assert w.actions(invoice) == {"notice": "done", "mark-notice": "done", "retry-1": "done"}
    assert fake_stripe.invoice(invoice)["metadata"]["dunctl_last_message"] == "notice"
    w.tick(at("3d1m"))
    assert w.actions(invoice) == {"notice": "done", "mark-notice": "done", "retry-1": "done", "reminder": "done",
                                  "mark-reminder": "done"}
    assert fake_stripe.invoice(invoice)["metadata"]["dunctl_last_message"] == "reminder"
