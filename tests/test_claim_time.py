"""Every effect is decided against the ledger as it is when it is claimed, not as the tick planned it (issue 20,
defect 7): a case recovered by an earlier batch of the same tick, or paused by a person while the tick runs, gets
nothing more. A batch holds 25 effects, so 26 customers put some of them in a later batch."""

from __future__ import annotations

import threading
from datetime import timedelta

from dunctl.tick.executor import EFFECTS_PER_BATCH
from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, at, cli, customer, dunctl_process, failed_invoice, open_engine_ledger, seed, starter, sent_as
from tests.servers import SmtpServer

CUSTOMERS = EFFECTS_PER_BATCH + 1
PAY = "POST /v1/invoices/:id/pay"


def test_a_customer_whose_retry_recovered_the_invoice_gets_no_reminder_in_the_same_tick(tmp_path, fake_stripe):
    with SmtpServer() as smtp:
        config = starter(tmp_path, **{"stripe.retries": "dunctl", "stripe.api_base": fake_stripe.url,
                                      "channels.email": {"transport": "smtp", "host": smtp.host, "port": smtp.port}})
        env = {"STRIPE_API_KEY": TEST_KEY}
        fake_stripe.set_now(T0)
        invoices = [fake_stripe.fail_invoice(email=f"c{i:02}@example.com", at=T0) for i in range(CUSTOMERS)]
        for when in (T0 + timedelta(hours=1), T0 + timedelta(days=3, hours=1)):   # no tick on day 2
            if when > T0 + timedelta(days=1):
                for invoice in invoices:
                    fake_stripe.next_payment_succeeds(invoice, True)             # retry-1 recovers every one
            fake_stripe.set_now(when)
            ticked = cli(config, "tick", "--now", when.isoformat(), env=env)
            assert ticked.exit_code == 0, ticked.output
        steps = [sent_as(config, r.message)[1] for r in smtp.received if r.rcpt_tos[0].startswith("c")]
    assert fake_stripe.count(PAY) == CUSTOMERS
    # the day-3 reminder went to nobody: each had just paid, and got the payment's thank-you instead
    assert sorted(steps) == ["notice"] * CUSTOMERS + ["recovered"] * CUSTOMERS
    ledger = open_engine_ledger(config)
    reminders = [a for invoice in invoices for a in ledger.actions(ledger.cases.for_invoice(invoice)["id"])
                 if a["step_id"] == "reminder"]
    assert {a["status"] for a in reminders} <= {"suppressed"}, reminders


class PausingSmtpServer(SmtpServer):
    """When the first message arrives, a person runs `dunctl case pause` on another case (the tick is in its
    first batch, and waits for this server's answer): a pause that lands between two batches, every time."""

    def __init__(self, invoice: str):
        super().__init__()
        self.config = None                   # set once the config naming this server is written
        handler = self.controller.handler
        original = handler.handle_DATA
        self.paused = None
        once = threading.Lock()

        async def pause_then_accept(server, session, envelope):
            if once.acquire(blocking=False):
                self.paused = cli(self.config, "case", "pause", invoice, "--reason", "paying by wire",
                                  "--now", at("31m").isoformat())
            return await original(server, session, envelope)

        handler.handle_DATA = pause_then_accept


def test_a_case_paused_while_a_tick_runs_gets_nothing_afterwards(tmp_path):
    last = f"in_{CUSTOMERS - 1:02}"          # customers are taken in order: the last one is in the second batch
    with PausingSmtpServer(last) as smtp:
        config = smtp.config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp.host,
                                                                       "port": smtp.port}})
        ledger = open_engine_ledger(config)
        seed(ledger, *[failed_invoice(f"in_{i:02}", customer_id=f"cus_{i:02}") for i in range(CUSTOMERS)],
             customers=[customer(f"cus_{i:02}", email=f"c{i:02}@example.com") for i in range(CUSTOMERS)])
        ledger.close()   # as a person's shell and cron's ticks would: no connection of this process stays open
        for offset in ("31m", "3d1h"):
            running = dunctl_process(config, "tick", "--no-sync", "--now", at(offset).isoformat())
            assert running.wait(timeout=120) == 0, running.stderr.read()
        received = [r.rcpt_tos[0] for r in smtp.received]
    assert smtp.paused is not None and smtp.paused.exit_code == 0, smtp.paused and smtp.paused.output
    assert f"c{CUSTOMERS - 1:02}@example.com" not in received
    assert len(received) == 2 * (CUSTOMERS - 1)    # everyone else: the notice, then the reminder
    ledger = open_engine_ledger(config)
    notice = next(a for a in ledger.actions(ledger.cases.for_invoice(last)["id"]) if a["step_id"] == "notice")
    assert notice["status"] == "suppressed" and "paused" in notice["detail"], notice
