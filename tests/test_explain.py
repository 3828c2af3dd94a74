"""`dunctl explain`: which rule matched and why, each step's state, what happens next."""

import json
from datetime import datetime, timezone

from tests.helpers import at, cli, customer, failed_invoice, open_engine_ledger, seed, starter


def test_explain_says_why_the_segment_matched_and_what_each_step_is_waiting_for(tmp_path):
    config = starter(tmp_path, **{"sender.quiet_hours": "21:00-08:00", "sender.timezone": "America/New_York"})
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1", amount=4900), customers=[customer("cus_1", tier="enterprise")])
    assert cli(config, "tick", "--no-sync", "--now", at("31m").isoformat()).exit_code == 0
    night = datetime(2026, 11, 5, 7, 0, tzinfo=timezone.utc)    # day 2.7, 02:00 in New York
    result = cli(config, "explain", "in_1", "--json", "--now", night.isoformat())
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(r["segment"], r["matched"]) for r in data["rules"]] == [
        ("human-review", False), ("update-payment-method", False), ("ach", False), ("enterprise", True)]
    assert "amount_due" in data["rules"][0]["why"] and "failure_type" in data["rules"][1]["why"]
    steps = {s["step"]: s for s in data["steps"]}
    assert steps["notice"]["state"] == "done"
    assert steps["retry-1"]["state"] == "due now"
    assert steps["account-manager"]["state"] == "to come" and steps["account-manager"]["audience"] == "internal"
    text = cli(config, "explain", "in_1", "--now", night.isoformat()).stdout
    assert "segment enterprise: matched" in text and "next: retry-1" in text


def test_explain_shows_quiet_hours_as_the_reason_a_message_waits(tmp_path):
    config = starter(tmp_path, **{"sender.quiet_hours": "21:00-08:00", "sender.timezone": "America/New_York"})
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    night = datetime(2026, 11, 3, 3, 0, tzinfo=timezone.utc)    # 22:00 in New York, the notice is due
    assert cli(config, "tick", "--no-sync", "--now", at("10m").isoformat()).exit_code == 0   # opens the case
    data = json.loads(cli(config, "explain", "in_1", "--json", "--now", night.isoformat()).stdout)
    notice = next(s for s in data["steps"] if s["step"] == "notice")
    assert notice["state"] == "waits" and notice["why"] == "quiet hours in the customer's time zone"
    assert notice["when"] == "2026-11-03T13:00:00Z"
    assert data["next_step"] == "notice" and data["next_due_at"] == "2026-11-03T13:00:00Z"
