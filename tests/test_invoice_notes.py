"""The note dunctl leaves on a Stripe invoice (dunctl/adoption.py): one request per invoice per tick, naming the
latest message the tick delivered for it. A failed note tried again beside a newer one was a second request that
nobody in the Dashboard saw."""

from __future__ import annotations

from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, at, cli, open_engine_ledger, starter

NOTE = "POST /v1/invoices/:id"
ENV = {"STRIPE_API_KEY": TEST_KEY}


def _tick(config, fake, when, *extra):
    fake.set_now(at(when))
    result = cli(config, "tick", "--now", at(when).isoformat(), *extra, env=ENV)
    assert result.exit_code in (0, 1), result.output
    return result


def _steps(config, invoice) -> dict[str, str]:
    ledger = open_engine_ledger(config)
    try:
        return {a["step_id"]: a["status"] for a in ledger.actions(ledger.cases.for_invoice(invoice)["id"])
                if a["step_id"] in ("notice", "reminder") or a["step_id"].startswith("mark-")}
    finally:
        ledger.close()


def test_a_failed_note_is_replaced_by_the_next_messages_note_in_one_request(tmp_path, fake_stripe, smtp_server):
    config = starter(tmp_path, ledger=False, **{
        "stripe.api_base": fake_stripe.url,
        "channels.email": {"transport": "smtp", "host": smtp_server.host, "port": smtp_server.port}})
    fake_stripe.set_now(T0)
    invoice = fake_stripe.fail_invoice(at=T0)
    fake_stripe.inject(500, times=20, route=NOTE)
    _tick(config, fake_stripe, "31m", "--new-ledger")
    assert _steps(config, invoice) == {"notice": "done", "mark-notice": "failed"}
    fake_stripe.calm()
    fake_stripe.reset_counts()

    _tick(config, fake_stripe, "3d1m")                  # the reminder goes out; its note says all a reader needs
    assert len(smtp_server.received) == 2
    assert fake_stripe.count(NOTE) == 1
    assert fake_stripe.invoice(invoice)["metadata"]["dunctl_last_message"] == "reminder"
    assert _steps(config, invoice) == {"notice": "done", "mark-notice": "failed", "reminder": "done",
                                       "mark-reminder": "done"}
    _tick(config, fake_stripe, "3d2h")                  # the superseded note is not tried later either
    assert fake_stripe.count(NOTE) == 1
