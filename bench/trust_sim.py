"""The trust simulation: dunctl's irreversible-action rules under everything that goes wrong on a real machine.

A simulated account (the demo's world) is worked for 85 days by hourly ticks, as cron would, except that:

- the ledger starts in monitor mode and goes live on day 12 (as a team switches dunctl on);
- cron stops for 3 days (days 16-19), 10 days (days 24-34) and 30 days (days 45-75);
- a SIGTERM lands in the middle of the busy tick after the 10-day outage, and a kill -9 in the one after it
  (in-process: the stop flag a signal handler sets, and an exception that unwinds the tick right after a message
  left, as a process killed then would leave it: claimed, started, delivered, never recorded);
- the machine's clock jumps a week ahead for one tick on day 40 (the tick compares it with the payment provider's).

It then counts what a finance team could not undo, from the ledger, the channels' own log and the simulated
account's truth (who paid when):

    irreversible_untold    pause/cancel/write-off with no delivered announcing message >= notice earlier
    duplicate_messages     one step's message delivered twice
    after_payment          customer messages delivered after the customer paid (a "payment received" thanks aside)
    unknown                actions whose outcome is unknown (at most one per interruption)
    paused_after_payment   paid invoices whose subscription dunctl paused and did not resume

    python bench/trust_sim.py [--customers 400] [--seed 42]

Every count but `unknown` must be 0, and `unknown` at most `interruptions`; tests/test_trust_simulation.py runs a
small book.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dunctl.channels import Delivery  # noqa: E402
from dunctl.clock import from_iso  # noqa: E402
from dunctl.config import SUSPENDING, load_config  # noqa: E402
from dunctl.ledger import Ledger  # noqa: E402
from dunctl.simulation.account import SimulatedAccount  # noqa: E402
from dunctl.simulation.assumptions import DEFAULT_PRESET, preset_assumptions  # noqa: E402
from dunctl.simulation.demo import DEFAULT_START, TICK_MINUTE, RecordingChannels, prepare_demo, stripe_retries  # noqa: E402
from dunctl.simulation.population import build_book  # noqa: E402
from dunctl.tick import run_tick  # noqa: E402

LIVE_FROM = 12
OUTAGES = ((16, 19), (24, 34), (45, 75))
SIGTERM_AFTER_OUTAGE = 34      # the first busy tick after this outage is interrupted by SIGTERM, the next by kill -9
CLOCK_JUMP_DAY = 40
DAYS = 85
CUSTOMER_MESSAGES = ("email", "sms")


class Killed(BaseException):
    """A kill -9: nothing below the driver sees it coming, nothing records what was in flight."""


@dataclass
class TrustCounts:
    customers: int
    ticks: int = 0
    cases: int = 0
    messages: int = 0
    irreversible: int = 0
    interruptions: int = 0
    stopped_by_signal: int = 0     # ticks that stopped early, as asked (the SIGTERM)
    clock_refusals: int = 0
    irreversible_untold: int = 0
    duplicate_messages: int = 0
    after_payment: int = 0
    unknown: int = 0
    paused_after_payment: int = 0
    examples: dict = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return (self.irreversible_untold == self.duplicate_messages == self.after_payment
                == self.paused_after_payment == 0 and self.unknown <= self.interruptions)


class LoggingChannels(RecordingChannels):
    """Records every delivery by its idempotency key, and can interrupt the tick at the n-th one."""

    def __init__(self, config, environ):
        super().__init__(config, environ)
        self.sent: list[tuple[str, datetime]] = []
        self.interrupt: tuple[str, int] | None = None    # ("sigterm" | "kill", after this many deliveries)
        self.stop_flag = None                             # set by the driver: what a SIGTERM handler would set
        self.fired = False

    def _delivered(self, key: str, now: datetime | None) -> None:
        self.sent.append((key, now))
        if self.interrupt is None:
            return
        kind, after = self.interrupt
        after -= 1
        self.interrupt = (kind, after)
        if after > 0:
            return
        self.interrupt, self.fired = None, True
        if kind == "kill":
            raise Killed()
        if self.stop_flag is not None:
            self.stop_flag()

    def email(self, message, key, now) -> Delivery:
        delivery = super().email(message, key, now)
        self._delivered(key, now)
        return delivery

    def sms(self, message, key) -> Delivery:
        delivery = super().sms(message, key)
        self._delivered(key, None)
        return delivery


def _down(day: float) -> bool:
    return any(start <= day < end for start, end in OUTAGES)


def run(directory: Path, customers: int = 400, seed: int = 42, preset: str = DEFAULT_PRESET,
        days: int = DAYS) -> TrustCounts:
    config_path = prepare_demo(directory)
    text = config_path.read_text().replace("\nmode: monitor", "\nmode: live")
    config_path.write_text(text)
    config = load_config(config_path)
    assumptions = preset_assumptions(preset)
    start = DEFAULT_START
    book = build_book(customers, seed, assumptions)
    account = SimulatedAccount(book, seed=seed, start=start, bill_until=start + timedelta(days=min(days, 40)),
                               assumptions=assumptions, smart_retries=stripe_retries(config))
    channels = LoggingChannels(config, {})
    counts = TrustCounts(customers)
    ledger = Ledger.open(config.ledger_path)
    ledger.skip_fsync()                                # a simulation: no commit waits for the disk
    interrupts = ["sigterm", "kill"]
    jumped = False
    now = start.replace(minute=TICK_MINUTE)
    end = start + timedelta(days=days)
    try:
        while now < end:
            day = (now - start) / timedelta(days=1)
            account.advance_to(now)
            if _down(day):
                now += timedelta(hours=1)
                continue
            if not jumped and day >= CLOCK_JUMP_DAY:
                jumped = True
                counts.clock_refusals += _clock_jump(ledger, config, account, channels, now)
            mode = "monitor" if day < LIVE_FROM else "live"
            if interrupts and day >= SIGTERM_AFTER_OUTAGE:
                channels.interrupt = (interrupts[0], 3)
            try:
                result = run_tick(ledger, config, account, channels, now, mode=mode, **_stop_arg(channels))
                counts.stopped_by_signal += result.interrupted
            except Killed:
                ledger.close()                         # the process is gone; the next tick is a new one
                ledger = Ledger.open(config.ledger_path)
                ledger.skip_fsync()
            if channels.fired:
                counts.interruptions += 1
                channels.fired = False
                interrupts.pop(0)
            channels.interrupt = None
            counts.ticks += 1
            now += timedelta(hours=1)
        _count(counts, ledger, account, channels, config)
    finally:
        ledger.close()
    return counts


def _stop_arg(channels: LoggingChannels) -> dict:
    """run_tick's way to be told to stop: what the CLI's SIGINT/SIGTERM handler sets."""
    flag = {"set": False}
    channels.stop_flag = lambda: flag.update(set=True)
    return {"interrupted": lambda: flag["set"]}


def _clock_jump(ledger, config, account, channels, now) -> int:
    """One tick whose machine clock reads a week ahead (a restored VM, an NTP step), run as cron runs it: on the
    machine's clock. The tick compares it with the provider's (Stripe's `Date`; here the account's own clock)
    after the sync and refuses to act. Returns 1 when it was refused, 0 when it acted."""
    from dunctl.tick.clocks import ClockRefused

    account.stripe_date = account.now
    wrong = now + timedelta(days=7)
    try:
        run_tick(ledger, config, account, channels, wrong, mode="live", wall=wrong)
    except ClockRefused:
        return 1
    finally:
        del account.stripe_date
    return 0


def _count(counts: TrustCounts, ledger: Ledger, account: SimulatedAccount, channels: LoggingChannels,
           config) -> None:
    notice = config.file.dunning.notice_before_suspension
    conn = ledger.conn
    counts.cases = conn.execute("SELECT count(*) FROM cases").fetchone()[0]
    counts.messages = len(channels.sent)
    keys = Counter(key for key, _ in channels.sent)
    counts.duplicate_messages = sum(n - 1 for n in keys.values() if n > 1)
    if counts.duplicate_messages:
        counts.examples["duplicate"] = [k for k, n in keys.items() if n > 1][:3]
    counts.unknown = sum(conn.execute(f"SELECT count(*) FROM {table} WHERE status = 'unknown'").fetchone()[0]
                         for table in ("actions", "notices"))     # dunning steps and pre-dunning notices
    cases = {row["id"]: row for row in ledger.db.query(
        "SELECT c.id, c.invoice_id, c.sequence_hash, i.subscription_id FROM cases c "
        "JOIN invoices i ON i.id = c.invoice_id")}
    actions: dict[int, list[dict]] = {}
    for row in ledger.db.query("SELECT * FROM actions ORDER BY id"):
        actions.setdefault(row["case_id"], []).append(row)
    for case_id, case in cases.items():
        truth = account.invoice_state(case["invoice_id"])
        steps = {s["id"]: s for s in ledger.cases.sequence_definition(case["sequence_hash"]).get("steps", [])}
        done = [a for a in actions.get(case_id, []) if a["status"] == "done"]
        for act in done:
            finished = from_iso(act["finished_at"])
            if act["action"] in SUSPENDING:
                counts.irreversible += 1
                if not _told(act, done, steps, notice):
                    counts.irreversible_untold += 1
                    counts.examples.setdefault("untold", []).append(f"{case['invoice_id']}:{act['step_id']}")
            if act["audience"] == "customer" and act["action"] in CUSTOMER_MESSAGES and truth.paid_at \
                    and finished >= truth.paid_at and not _thanks(act, steps):
                counts.after_payment += 1
                counts.examples.setdefault("after_payment", []).append(f"{case['invoice_id']}:{act['step_id']}")
        paused = any(a["action"] == "pause_subscription" for a in done)
        if paused and truth.status == "paid" and case["subscription_id"]:
            sub = account._subscription(case["subscription_id"]).subscription
            if sub.status == "paused":
                counts.paused_after_payment += 1
                counts.examples.setdefault("paused", []).append(case["invoice_id"])


def _told(act: dict, done: list[dict], steps: dict, notice: timedelta) -> bool:
    """A customer message announcing this step was delivered at least `notice` before it ran. The announcing
    messages are the steps that say `announces: <this step>`; a sequence that names none is held to the nearest
    customer message placed before the step (the rule's own fallback)."""
    ran = from_iso(act["finished_at"])
    announcing = _announcing(act["step_id"], steps)
    return any(other["step_id"] in announcing and from_iso(other["finished_at"]) + notice <= ran
               for other in done if other["audience"] == "customer")


def _announcing(step_id: str, steps: dict) -> set[str]:
    named = {sid for sid, s in steps.items() if s.get("announces") == step_id}
    if named:
        return named
    order = list(steps)
    for sid in reversed(order[:order.index(step_id)] if step_id in order else []):
        step = steps[sid]
        targets = step.get("to") if isinstance(step.get("to"), list) else [step.get("to") or "billing_contact"]
        if step.get("action") in CUSTOMER_MESSAGES and any(t in ("billing_contact", "customer") for t in targets):
            return {sid}
    return set()


def _thanks(act: dict, steps: dict) -> bool:
    """The "payment received" message, the one message that belongs after a payment."""
    step = steps.get(act["step_id"])
    template = (step or {}).get("template") or act["step_id"]
    return "recovered" in template or "recovered" in act["step_id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--days", type=int, default=DAYS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dunctl-trust-") as scratch:
        started = time.process_time()
        counts = run(Path(scratch) / "sim", customers=args.customers, seed=args.seed, days=args.days)
        cpu = time.process_time() - started
    print(f"trust simulation: {counts.customers} customers, {args.days} days, {counts.ticks} ticks, "
          f"{counts.cases} cases, {counts.messages} messages, {counts.irreversible} irreversible actions, "
          f"{cpu:.1f} s CPU")
    print(f"  monitor -> live on day {LIVE_FROM}; cron down {', '.join(f'{b - a} days' for a, b in OUTAGES)}; "
          f"{counts.interruptions} interruptions (SIGTERM, kill -9; {counts.stopped_by_signal} tick stopped as asked); clock jump refused: {counts.clock_refusals}")
    for name in ("irreversible_untold", "duplicate_messages", "after_payment", "paused_after_payment"):
        print(f"  {name:22} {getattr(counts, name)}   (goal 0)")
    print(f"  {'unknown':22} {counts.unknown}   (goal <= {counts.interruptions}, one per interruption)")
    if counts.examples:
        print("  examples: " + json.dumps(counts.examples)[:600])
    print("holds" if counts.holds else "DOES NOT HOLD")
    sys.exit(0 if counts.holds else 1)


if __name__ == "__main__":
    main()


__all__ = ["run", "TrustCounts", "asdict"]
