"""Issue 20 (smaller): customer data on a terminal is text. A name like `[/bold]` is not Rich markup (it crashed
`customer show`), and escape codes in a name or email (colours, a screen clear, an OSC title change) are dropped
by `customer show` and `preview`, never passed to the terminal."""

from tests.helpers import at, cli, customer, failed_invoice, open_engine_ledger, seed, starter

NAME = "[/bold]\x1b[2J\x1b[31mAda\x1b[0m Lovelace"


def ledger_with(tmp_path, email="ada@example.com"):
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    who = customer("cus_1", email=email)
    who.name = NAME
    seed(ledger, failed_invoice("in_1"), customers=[who])
    ledger.close()
    return config


def test_customer_show_prints_markup_and_escape_codes_literally(tmp_path):
    config = ledger_with(tmp_path, email="ada\x1b]0;pwned\x07@example.com")
    assert cli(config, "tick", "--no-sync", "--now", at("2h").isoformat()).exit_code == 0
    shown = cli(config, "customer", "show", "cus_1")
    assert shown.exit_code == 0, shown.output
    assert "[/bold]Ada Lovelace" in shown.stdout and "ada@example.com" in shown.stdout
    assert "\x1b" not in shown.output and "\x07" not in shown.output


def test_preview_drops_escape_codes_from_customer_data(tmp_path):
    config = ledger_with(tmp_path, email="ada@example.com, \x1b]0;pwned\x07bob@example.com")
    assert cli(config, "tick", "--no-sync", "--now", at("2h").isoformat()).exit_code == 0
    for fmt in ("text", "html", "eml"):
        shown = cli(config, "preview", "payment-failed", "--case", "in_1", "--format", fmt, "--now",
                    at("2h").isoformat())
        assert shown.exit_code == 0, shown.output
        assert "\x1b" not in shown.output, fmt
        assert "[/bold]Ada" in shown.stdout or fmt == "eml", fmt   # (an .eml encodes the body)
