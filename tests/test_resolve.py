"""An action whose outcome is unknown stays visible until a person settles it with `dunctl case resolve`."""

from tests.helpers import at, cli, failed_invoice, open_engine_ledger, seed, starter


def crashed_after_claiming(config):
    """What a tick that died mid-send leaves behind: a claim, started, and no result."""
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    assert cli(config, "tick", "--no-sync", "--now", at("10m").isoformat()).exit_code == 0   # opens the case
    case_id = ledger.case_for_invoice("in_1")["id"]
    action_id = ledger.claim_action(case_id, "step", "notice", "email", "email", "customer", at("30m"), at("31m"),
                                    "dunctl-in_1-notice", None)
    ledger.mark_started(at("31m"), actions=[action_id])
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
    assert [r.message["X-Dunctl-Step"] for r in smtp_server.received] == ["notice"]   # exactly once more
    action = next(a for a in ledger.actions(case_id) if a["step_id"] == "notice")
    assert (action["status"], action["resends"], action["idempotency_key"]) == ("done", 1, "dunctl-in_1-notice-r1")
    timeline = [t["summary"] for t in ledger.timeline(case_id)]
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
    assert [r.message["X-Dunctl-Step"] for r in smtp_server.received] == ["reminder"]


def test_resolve_refuses_what_it_cannot_do_and_says_why(tmp_path, smtp_server):
    config = smtp_config(tmp_path, smtp_server)
    crashed_after_claiming(config)
    cli(config, "tick", "--no-sync", "--now", at("40m").isoformat())
    both = cli(config, "case", "resolve", "in_1", "notice", "--sent", "--resend", "-r", "x")
    assert both.exit_code == 2 and "either --sent or --resend" in both.stderr
    wrong = cli(config, "case", "resolve", "in_1", "reminder", "--sent", "-r", "x")
    assert wrong.exit_code == 2 and "unknown here: notice" in wrong.stderr

