"""An action whose outcome is unknown stays visible until a person settles it with `dunctl case resolve`."""

from tests.helpers import at, cli, failed_invoice, open_engine_ledger, seed, starter, sent_as


def crashed_after_claiming(config):
    """What a tick that died mid-send leaves behind: a claim, started, and no result."""
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    assert cli(config, "tick", "--no-sync", "--now", at("10m").isoformat()).exit_code == 0   # opens the case
    case_id = ledger.cases.for_invoice("in_1")["id"]
    action_id = ledger.journal("actions").claim_action(case_id, "step", "notice", "email", "email", "customer", at("30m"), at("31m"),
                                    "dunctl-in_1-notice", None)
    ledger.journal("actions").mark_started(at("31m"), [action_id], [])
    return ledger, case_id


def smtp_config(tmp_path, smtp_server):
    return starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp_server.host,
                                                   "port": smtp_server.port}})


def test_unknown_is_listed_with_the_command_that_settles_it_and_resend_sends_once_more(tmp_path, smtp_server):
    config = smtp_config(tmp_path, smtp_server)
    ledger, case_id = crashed_after_claiming(config)
    assert cli(config, "tick", "--no-sync", "--now", at("40m").isoformat()).exit_code == 0
    assert smtp_server.received == []
    status = cli(config, "status", "--now", at("41m").isoformat())
    assert "dunctl case resolve in_1 notice --sent|--resend -r REASON" in status.stdout
    resolved = cli(config, "case", "resolve", "in_1", "notice", "--resend", "-r", "not in the SMTP log",
                   "--by", "ops@acme", "--now", at("50m").isoformat())
    assert resolved.exit_code == 0, resolved.output
    for offset in ("51m", "52m", "2h"):
        assert cli(config, "tick", "--no-sync", "--now", at(offset).isoformat()).exit_code == 0
    assert [sent_as(config, r.message)[1] for r in smtp_server.received] == ["notice"]   # exactly once more
    action = next(a for a in ledger.actions(case_id) if a["step_id"] == "notice")
    assert (action["status"], action["resends"], action["idempotency_key"]) == ("done", 1, "dunctl-in_1-notice-r1")
    timeline = [t["summary"] for t in ledger.cases.timeline(case_id)]
    assert any("resolved by ops@acme: run it once more (not in the SMTP log)" in t for t in timeline)


def test_sent_settles_it_without_sending_and_the_sequence_carries_on(tmp_path, smtp_server):
    config = smtp_config(tmp_path, smtp_server)
    ledger, case_id = crashed_after_claiming(config)
    cli(config, "tick", "--no-sync", "--now", at("40m").isoformat())
    assert cli(config, "case", "resolve", "in_1", "notice", "--sent", "-r", "it is in the SMTP log",
               "--now", at("50m").isoformat()).exit_code == 0
    assert cli(config, "tick", "--no-sync", "--now", at("3d1h").isoformat()).exit_code == 0
    steps = {a["step_id"]: a["status"] for a in ledger.actions(case_id)}
    assert steps["notice"] == "done" and steps["reminder"] == "done"
    assert [sent_as(config, r.message)[1] for r in smtp_server.received] == ["reminder"]


def test_resolve_refuses_what_it_cannot_do_and_says_why(tmp_path, smtp_server):
    config = smtp_config(tmp_path, smtp_server)
    crashed_after_claiming(config)
    cli(config, "tick", "--no-sync", "--now", at("40m").isoformat())
    both = cli(config, "case", "resolve", "in_1", "notice", "--sent", "--resend", "-r", "x")
    assert both.exit_code == 2 and "either --sent or --resend" in both.stderr
    wrong = cli(config, "case", "resolve", "in_1", "reminder", "--sent", "-r", "x")
    assert wrong.exit_code == 2 and "unknown here: notice" in wrong.stderr


def unknowns_claimed_at(config, ledger, *minutes: int) -> None:
    """One unknown per case, each claimed (and started) at T0 + the given minutes, then settled by a tick."""
    seed(ledger, *[failed_invoice(f"in_{m}", customer_id=f"cus_{m}") for m in minutes])
    assert cli(config, "tick", "--no-sync", "--now", at("10m").isoformat()).exit_code == 0   # opens the cases
    for m in minutes:
        case_id = ledger.cases.for_invoice(f"in_{m}")["id"]
        action_id = ledger.journal("actions").claim_action(case_id, "step", "notice", "email", "email", "customer", at("30m"),
                                        at(f"{m}m"), f"dunctl-in_{m}-notice", None)
        ledger.journal("actions").mark_started(at(f"{m}m"), [action_id], [])


def test_all_sent_before_a_time_settles_the_unknowns_claimed_before_it_and_says_which(tmp_path, smtp_server):
    config = smtp_config(tmp_path, smtp_server)
    ledger = open_engine_ledger(config)
    unknowns_claimed_at(config, ledger, 31, 32, 50)
    tick = cli(config, "tick", "--no-sync", "--now", at("55m").isoformat())
    assert "3 actions have an unknown outcome: check them, then `dunctl case resolve`" in tick.stderr
    resolved = cli(config, "case", "resolve", "--all-sent", "--before", at("40m").isoformat(), "-r",
                   "all in the SMTP log", "--by", "ops@acme", "--now", at("1h").isoformat())
    assert resolved.exit_code == 0, resolved.output
    assert resolved.stdout.splitlines() == [
        "in_31 notice (email, claimed 2026-11-02 14:31:00): sent",
        "in_32 notice (email, claimed 2026-11-02 14:32:00): sent",
        "resolved 2 action(s) with an unknown outcome claimed before 2026-11-02 14:40:00"]
    steps = {c["invoice_id"]: ledger.actions(c["id"])[0]["status"] for c in ledger.cases.listed()}
    assert steps == {"in_31": "done", "in_32": "done", "in_50": "unknown"}    # the later one is still for a person
    timeline = [t["summary"] for t in ledger.cases.timeline(ledger.cases.for_invoice("in_31")["id"])]
    assert any("resolved by ops@acme" in t and "all in the SMTP log" in t for t in timeline)
    later = cli(config, "tick", "--no-sync", "--now", at("1h1m").isoformat())
    assert "1 action has an unknown outcome" in later.stderr
    assert smtp_server.received == []


def test_all_not_sent_runs_each_once_more_and_skips_a_case_no_longer_open(tmp_path, smtp_server):
    config = smtp_config(tmp_path, smtp_server)
    ledger = open_engine_ledger(config)
    unknowns_claimed_at(config, ledger, 31, 32)
    cli(config, "tick", "--no-sync", "--now", at("40m").isoformat())
    assert cli(config, "case", "close", "in_32", "-r", "paid by wire", "--now", at("41m").isoformat()).exit_code == 0
    resolved = cli(config, "case", "resolve", "--all-not-sent", "--before", at("45m").isoformat(), "-r",
                   "not in the SMTP log", "--now", at("50m").isoformat(), "--json")
    assert resolved.exit_code == 0, resolved.output
    import json

    data = json.loads(resolved.stdout)
    assert [(a["invoice_id"], a["status"]) for a in data["resolved"]] == [("in_31", "resend")]
    assert [a["invoice_id"] for a in data["left"]] == ["in_32"] and "is closed" in data["left"][0]["why"]
    assert cli(config, "tick", "--no-sync", "--now", at("51m").isoformat()).exit_code == 0
    assert [r.rcpt_tos[0] for r in smtp_server.received] == ["cus_31@example.com"]   # once more, just that one
    assert cli(config, "tick", "--no-sync", "--now", at("52m").isoformat()).exit_code == 0
    assert len(smtp_server.received) == 1


def test_bulk_resolve_needs_one_filter_and_a_time(tmp_path, smtp_server):
    config = smtp_config(tmp_path, smtp_server)
    crashed_after_claiming(config)
    for args in (["--all-sent"], ["--all-sent", "--all-not-sent", "--before", at("1h").isoformat()],
                 ["in_1", "notice", "--all-sent", "--before", at("1h").isoformat()]):
        result = cli(config, "case", "resolve", *args, "-r", "x")
        assert result.exit_code == 2 and "--all-sent or --all-not-sent, with --before TIME" in result.stderr, args
    assert "Traceback" not in result.output
