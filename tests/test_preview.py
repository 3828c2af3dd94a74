"""`dunctl preview`: a template exactly as the step would send it, for a real case or a sample one, without
touching the ledger."""

import email
import gc
import email.policy
import hashlib
import json
from pathlib import Path

from tests.helpers import at, cli, customer, failed_invoice, open_engine_ledger, seed, starter


def ledger_files(directory: Path) -> dict[str, str]:
    gc.collect()  # connections left by earlier in-process commands close (and checkpoint) now, not mid-test
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("dunctl.db*"))}


def with_a_case(tmp_path: Path) -> Path:
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_7", customer_id="cus_7", amount=12345),
         customers=[customer("cus_7", email="grace@example.com", billing_email="ap@hopper.example")])
    ledger.close()
    return config


def test_preview_of_a_real_case_matches_what_tick_then_sends(tmp_path):
    config = with_a_case(tmp_path)
    assert cli(config, "tick", "--no-sync", "--now", at("1m").isoformat()).exit_code == 0  # opens the case
    before = ledger_files(tmp_path)

    shown = cli(config, "preview", "payment-failed", "--case", "in_7", "--json", "--now", at("31m").isoformat())
    assert shown.exit_code == 0, shown.output
    preview = json.loads(shown.stdout)
    # read-only: the ledger is byte-identical, and nothing waits in its write-ahead log
    assert ledger_files(tmp_path)["dunctl.db"] == before["dunctl.db"]
    assert not (tmp_path / "dunctl.db-wal").exists() or (tmp_path / "dunctl.db-wal").stat().st_size == 0
    assert not (tmp_path / "outbox").exists()  # and nothing was sent
    assert preview["to"] == "ap@hopper.example, grace@example.com"  # billing_contact: billing_email and the customer
    assert "$123.45" in preview["subject"] and preview["html"] and "$123.45" in preview["text"]

    assert cli(config, "tick", "--no-sync", "--now", at("31m").isoformat()).exit_code == 0
    [sent_file] = (tmp_path / "outbox").glob("*.eml")
    sent = email.message_from_bytes(sent_file.read_bytes(), policy=email.policy.default)
    assert sent["To"] == preview["to"] and sent["Subject"] == preview["subject"]
    # the same text and HTML (the wire carries CRLF line ends)
    assert sent.get_body(("plain",)).get_content().replace("\r\n", "\n") == preview["text"]
    assert sent.get_body(("html",)).get_content().replace("\r\n", "\n") == preview["html"]


def test_preview_text_shows_the_headers_and_body(tmp_path):
    config = with_a_case(tmp_path)
    cli(config, "tick", "--no-sync", "--now", at("1m").isoformat())
    result = cli(config, "preview", "reminder", "--case", "in_7", "--now", at("3d").isoformat())
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("From: ") and lines[1] == "To: ap@hopper.example, grace@example.com"
    assert any(line.startswith("Subject: ") for line in lines[:4])
    assert "$123.45" in result.stdout


def test_preview_of_a_sample_case_per_failure_type_needs_no_ledger(tmp_path):
    config = starter(tmp_path, ledger=False)
    hard = cli(config, "preview", "update-card", "--failure", "card_hard", "--json")
    assert hard.exit_code == 0, hard.output
    data = json.loads(hard.stdout)
    assert data["source"] == "sample card_hard case" and data["to"] == "ada@example.com"
    assert not (tmp_path / "dunctl.db").exists()
    sms = json.loads(cli(config, "preview", "payment-reminder", "--json").stdout)
    assert sms["channel"] == "sms" and sms["subject"] is None and sms["text"]


def test_preview_writes_an_eml_a_mail_client_opens(tmp_path):
    config = with_a_case(tmp_path)
    cli(config, "tick", "--no-sync", "--now", at("1m").isoformat())
    target = tmp_path / "previews" / "notice.eml"
    target.parent.mkdir()
    result = cli(config, "preview", "payment-failed", "--case", "in_7", "--format", "eml", "-o", str(target))
    assert result.exit_code == 0, result.output
    message = email.message_from_bytes(target.read_bytes(), policy=email.policy.default)
    assert message["To"] == "ap@hopper.example, grace@example.com" and "$123.45" in message["Subject"]
    assert message.get_body(("html",)) is not None and message.get_body(("plain",)) is not None
    assert (message["X-Dunctl-Case"], message["X-Dunctl-Step"]) == ("in_7", "notice")  # a preview names them; a sent email carries only the opaque X-Dunctl-Ref


def test_preview_mistakes_are_one_line(tmp_path):
    config = with_a_case(tmp_path)
    unknown = cli(config, "preview", "no-such-template")
    assert unknown.exit_code == 2 and "unknown template 'no-such-template'" in unknown.stderr
    assert "payment-failed" in unknown.stderr  # the known ones are listed
    no_html = cli(config, "preview", "account-manager", "--format", "html")
    assert no_html.exit_code == 2 and "has no HTML part" in no_html.stderr
    no_case = cli(config, "preview", "reminder", "--case", "in_nope")
    assert no_case.exit_code == 2 and "no case for invoice in_nope" in no_case.stderr
    both = cli(config, "preview", "reminder", "--case", "in_7", "--failure", "card_soft")
    assert both.exit_code == 2
    bad_type = cli(config, "preview", "reminder", "--failure", "card_lost")
    assert bad_type.exit_code == 2 and "unknown failure type 'card_lost'" in bad_type.stderr


def test_preview_in_another_locale_uses_that_languages_templates(tmp_path):
    config = with_a_case(tmp_path)
    cli(config, "tick", "--no-sync", "--now", at("1m").isoformat())
    (tmp_path / "templates" / "reminder.fr.subject.j2").write_text("Rappel : {{ amount }} impayé")
    french = json.loads(cli(config, "preview", "reminder", "--case", "in_7", "--locale", "fr", "--json").stdout)
    assert french["subject"].startswith("Rappel") and "123,45" in french["subject"]  # French number format
    assert '<html lang="fr">' in french["html"]  # the HTML part in the same language
    english = json.loads(cli(config, "preview", "reminder", "--case", "in_7", "--json").stdout)
    assert not english["subject"].startswith("Rappel") and "$123.45" in english["subject"]
    sample = json.loads(cli(config, "preview", "reminder", "--failure", "card_soft", "--locale", "fr", "--json").stdout)
    assert sample["subject"].startswith("Rappel")
