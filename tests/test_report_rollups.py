"""The report's rollups (kept by triggers) give exactly the figures of a scan of the cases, on random ledgers.

Each ledger is written the way dunctl writes one: cases opened, acted on (claims and results, some touches
recorded after the payment they preceded), re-classified, escalated, ended, and some cases re-opened by hand,
through the Ledger's own methods. The report is then computed twice, from the rollups and from the raw scan
(the reference), for several periods (whole days, bounds in the middle of a day, a period inside one day) and
attribution windows, and must match to the last field."""

from __future__ import annotations

import random
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import pytest

from dunctl.clock import iso
from dunctl.ledger import Ledger
from dunctl.ledger.migrations import rebuild_rollups
from dunctl.report import Period, build_report, headline

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
NOW = datetime(2026, 12, 31, tzinfo=timezone.utc)
ROLLUPS = ("report_cases", "report_attempts", "report_recovery_days", "report_channels", "report_subscriptions")


def _at(rng: random.Random, base: datetime, max_days: float) -> datetime:
    return base + timedelta(seconds=rng.randrange(int(max_days * 86400)))


def random_ledger(path, seed: int, cases: int = 300) -> Ledger:
    rng = random.Random(seed)
    ledger = Ledger.open(path)
    db = ledger.db
    db.execute("PRAGMA synchronous = OFF")     # hundreds of small commits; durability is not under test here
    currencies = ["usd", "eur", "jpy", "gbp"][: rng.randint(2, 4)]
    for n in range(40):
        canceled = iso(_at(rng, START, 300)) if rng.random() < 0.3 else None
        db.execute("INSERT INTO subscriptions(id, customer_id, status, canceled_at) VALUES (?, 'cus', ?, ?)",
                   [f"sub_{n}", "canceled" if canceled else "active", canceled])
    opened = []
    for n in range(cases):
        # Opened as the tick opens a case: one row with the invoice's amounts and the first failure's class.
        first = _at(rng, START, 300)
        amount = rng.randint(100, 50000)
        paid_before = rng.choice([0, 0, 0, amount // 3])
        currency = rng.choice(currencies)
        invoice_id = f"in_{seed}_{n}"
        db.execute("""INSERT INTO invoices(id, customer_id, subscription_id, currency, amount_due, amount_paid,
                        amount_remaining, status, created_at, synced_at, pending)
                      VALUES (?, 'cus', ?, ?, ?, ?, ?, 'open', ?, ?, 0)""",
                   [invoice_id, f"sub_{rng.randrange(40)}", currency, amount, paid_before, amount - paid_before,
                    iso(first), iso(first)])
        segment, sequence = rng.choice([("default", "standard"), ("enterprise", "high-value"),
                                        ("update-card", "update-payment-method")])
        failure = rng.choice(["card_soft", "card_hard", "card_update", "bank_soft"])
        case_id = db.execute(
            """INSERT INTO cases(invoice_id, customer_id, subscription_id, currency, amount_due, amount_paid_at_open,
                 amount_remaining, segment, sequence, sequence_hash, sequence_def, failure_type, first_failure_type,
                 attempts, first_failed_at, opened_at, next_due_at)
               SELECT id, customer_id, subscription_id, currency, amount_due, amount_paid, amount_remaining, ?, ?,
                      'h', '', ?, ?, ?, ?, ?, ? FROM invoices WHERE id = ?""",
            [segment, sequence, failure, failure, rng.randint(1, 3), iso(first), iso(first), iso(first),
             invoice_id]).lastrowid
        opened.append((case_id, first, amount - paid_before))
    # Steps: claims and results, as the executor records them.
    for case_id, first, _ in opened:
        for step in range(rng.randint(0, 5)):
            action = rng.choice(["email", "sms", "retry", "escalate", "slack", "pause_subscription"])
            due = first + timedelta(hours=rng.choice([1, 24, 72, 120, 360]) + step)
            action_id = ledger.journal("actions").claim_action(case_id, "step", f"s{step}", action, action,
                                                               "customer", due, due, f"{case_id}:{step}", None)
            if action_id and rng.random() < 0.8:
                ledger.journal("actions").record_result(
                    action_id, rng.choice(["done", "done", "done", "failed", "unknown"]),
                    due + timedelta(seconds=rng.randrange(600)))
        if rng.random() < 0.3:
            ledger.cases.record_attempt(case_id, rng.randint(1, 6), "stolen_card")
            ledger.cases.reclassify(case_id, "card_hard", "stolen_card")
        if rng.random() < 0.15:
            ledger.cases.hand_to_person(case_id, first + timedelta(days=15))
    # Endings.
    for case_id, first, stake in opened:
        roll = rng.random()
        if roll < 0.45:
            paid = _at(rng, first, 40)
            ledger.cases.end(case_id, "recovered", "paid", paid, recovered_at=paid, amount_recovered=stake,
                            amount_remaining=0, recovered_attempt=rng.choice([None, 2, 3, 4]),
                            recovered_by="retry")
        elif roll < 0.6:
            ledger.cases.end(case_id, rng.choice(["exhausted", "written_off", "voided", "closed"]), "ended",
                            _at(rng, first, 40), amount_remaining=0, amount_recovered=rng.choice([0, stake // 2]))
            if rng.random() < 0.5:
                ledger.cases.mark_churned(case_id)
        elif roll < 0.7:
            ledger.cases.pause(case_id)
    # Touches recorded after the payment they preceded (a result written after the case ended), and unknown
    # outcomes a person settles as sent.
    for case_id, _, _ in rng.sample(opened, 30):
        case = ledger.cases.get(case_id)
        if case["state"] == "recovered":
            before = datetime.fromisoformat(case["recovered_at"].replace("Z", "+00:00")) - timedelta(hours=5)
            ledger.record_decision(case_id, "step", "late-touch", "email", "done", before, before,
                                   f"{case_id}:late", "late", None)
    for action in ledger.actions_with_status("unknown")[::2]:
        ledger.resolve_unknown(action["id"], sent=True, note="a person checked", now=NOW)
    # A person's repair re-opens some ended cases (state and amounts move back); a subscription comes back.
    for case_id, _, stake in rng.sample(opened, 10):
        db.execute("UPDATE cases SET state = 'open', closed_at = NULL, recovered_at = NULL, amount_recovered = 0, "
                   "amount_remaining = ?, churned = 0 WHERE id = ?", [stake, case_id])
    db.execute("UPDATE subscriptions SET canceled_at = NULL WHERE id = 'sub_1'")
    db.execute("UPDATE subscriptions SET canceled_at = '2026-06-15T12:00:00Z' WHERE id = 'sub_2'")
    return ledger


def _instant(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc) if text else None


PERIODS = [
    (None, None),
    ("2026-03-01T00:00:00", "2026-07-01T00:00:00"),          # whole days
    ("2026-02-10T13:45:07", "2026-08-20T06:00:00"),          # both bounds mid-day
    ("2026-04-01T00:00:00", None),
    (None, "2026-05-17T18:30:00"),
    ("2026-05-03T02:00:00", "2026-05-03T23:00:00"),          # inside one day
    ("2026-05-03T12:00:00", "2026-05-04T12:00:00"),          # across one midnight
]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_report_from_rollups_equals_the_raw_scan(tmp_path, seed):
    ledger = random_ledger(tmp_path / "ledger.db", seed)
    for since, until in PERIODS:
        period = Period(_instant(since), _instant(until))
        for window in (timedelta(days=3), timedelta(hours=30)):
            fast = asdict(build_report(ledger, NOW, period, attribution_window=window))
            reference = asdict(build_report(ledger, NOW, period, attribution_window=window, rollup=False))
            assert fast == reference, (since, until, window)
    assert asdict(headline(ledger, NOW)) == asdict(headline(ledger, NOW, rollup=False))
    ledger.close()


def test_the_random_ledgers_exercise_what_the_comparison_relies_on(tmp_path):
    """Guard against a comparison that passes because both sides are empty."""
    report = build_report(random_ledger(tmp_path / "ledger.db", 1), NOW, rollup=False)
    h = report.headline
    assert h.recovered > 50 and h.open > 20 and len(h.ended_by_state) >= 4 and len(h.currencies) >= 2
    assert h.churn.churned_subscriptions > 0 and h.days_to_recovery.median is not None
    channels = {row.key for row in report.breakdowns["channel"]}
    assert {"email", "no touch"} <= channels and len(channels) >= 4
    assert len(report.retry_success) >= 3


def test_triggers_keep_the_same_rollups_a_rebuild_computes(tmp_path):
    ledger = random_ledger(tmp_path / "ledger.db", 5)
    conn = ledger.db.conn
    kept = {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall()) for table in ROLLUPS}
    with ledger.db.atomic():
        rebuild_rollups(conn)
    rebuilt = {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall()) for table in ROLLUPS}
    assert kept == rebuilt
    assert all(kept[table] for table in ROLLUPS)
    assert conn.execute("SELECT count(*) FROM report_cases WHERE cases <= 0").fetchone()[0] == 0


def test_a_ledger_from_before_the_rollups_is_filled_when_migrated(tmp_path):
    path = tmp_path / "ledger.db"
    ledger = random_ledger(path, 6, cases=80)
    expected = asdict(build_report(ledger, NOW, rollup=False))
    # Forget the rollups as a ledger written before m102 would: no triggers, no tables, not applied.
    conn = ledger.db.conn
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'report_%'"
                                ).fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    for table in (*ROLLUPS, "report_settings"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm102_report_rollups'")
    conn.commit()
    ledger.close()
    migrated = Ledger.open(path)
    assert asdict(build_report(migrated, NOW)) == expected
