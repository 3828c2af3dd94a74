"""`dunctl status` and `dunctl report` on a real terminal (a pty made by util-linux `script`, sized with `stty`),
not only with COLUMNS set: at 80 and 200 columns no line is wider than the terminal, and no amount, invoice id or
code is split across lines or cut short, and no metric's name is cut."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from rich.cells import cell_len

from dunctl.clock import iso
from dunctl.money import format_amount
from dunctl.report import build_report
from dunctl.report_render import headline_rows
from tests.helpers import open_engine_ledger, starter, unavailable

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
# (currency, amount due): a space inside the symbol (CHF), three decimals (KWD), zero decimals (JPY), big ones.
AMOUNTS = [("usd", 123456789), ("chf", 9876543), ("kwd", 1234567), ("jpy", 98765432), ("eur", 4990),
           ("usd", 250000), ("gbp", 7777777)]
NAMES = ["Hyperion Intergalactic Widget Manufacturing Cooperative", "Zoë Ångström-Øster", "株式会社テスト商事",
         "A", "Nakamura & Sons Heavy Industries Ltd", "O'Brien", "Björk Guðmundsdóttir"]


def _ledger(config):
    ledger = open_engine_ledger(config)
    db = ledger.db
    for n, ((currency, amount), name) in enumerate(zip(AMOUNTS, NAMES)):
        invoice_id = f"in_1Q{n:02d}ZyXwVuTsRqPoNmLkJiHg"        # 27 characters, like Stripe's
        first = iso(datetime(2026, 11, 1 + n, 9, tzinfo=timezone.utc))
        db.execute("INSERT INTO customers(id, name, email, updated_at) VALUES (?, ?, ?, ?)",
                   [f"cus_{n}", name, f"billing{n}@example.com", first])
        db.execute("""INSERT INTO invoices(id, customer_id, currency, amount_due, amount_paid, amount_remaining,
                        status, created_at, synced_at, pending) VALUES (?, ?, ?, ?, 0, ?, 'open', ?, ?, 0)""",
                   [invoice_id, f"cus_{n}", currency, amount, amount, first, first])
        recovered = n % 3 == 2
        db.execute(
            """INSERT INTO cases(invoice_id, customer_id, currency, amount_due, amount_remaining, amount_recovered,
                 segment, sequence, sequence_hash, sequence_def, failure_type, first_failure_type, decline_code,
                 state, first_failed_at, opened_at, next_step, next_due_at, recovered_at, closed_at)
               VALUES (?, ?, ?, ?, ?, ?, 'update-payment-method', 'update-payment-method', 'h', '{}',
                       'card_update', 'card_update', 'revocation_of_all_authorizations', ?, ?, ?,
                       'escalate-to-account-manager', ?, ?, ?)""",
            [invoice_id, f"cus_{n}", currency, amount, 0 if recovered else amount, amount if recovered else 0,
             "recovered" if recovered else "open", first, first, first,
             first if recovered else None, first if recovered else None])
    return ledger


def on_a_terminal(config, columns: int, *args: str) -> str:
    script = shutil.which("script")
    if script is None:
        unavailable("util-linux `script` is missing; .ci/run installs it")
    command = shlex.join([sys.executable, "-m", "dunctl", "-c", str(config), *args])
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    done = subprocess.run([script, "-q", "-e", "-c", f"stty cols {columns} rows 50; {command}", "/dev/null"],
                          capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", done.stdout)
    return text.replace("\r\n", "\n").replace("\r", "")


def check(text: str, columns: int, whole: list[str]) -> None:
    lines = text.splitlines()
    assert lines, "no output"
    too_wide = [line for line in lines if cell_len(line) > columns]
    assert too_wide == []
    for value in whole:
        assert any(value in line for line in lines), f"{value!r} is not whole on any line"
    cut = [line for line in lines if re.search(r"\d…|…\d", line)]
    assert cut == []


@pytest.fixture
def config(tmp_path):
    config = starter(tmp_path)
    _ledger(config)
    return config


@pytest.mark.parametrize("columns", [80, 200])
def test_status_never_splits_an_amount_an_id_or_a_code(config, columns):
    text = on_a_terminal(config, columns, "status", "--now", iso(NOW))
    open_amounts = [format_amount(a, c) for n, (c, a) in enumerate(AMOUNTS) if n % 3 != 2]
    ids = [f"in_1Q{n:02d}ZyXwVuTsRqPoNmLkJiHg" for n in range(len(AMOUNTS)) if n % 3 != 2]
    check(text, columns, [*open_amounts, *ids, "revocation_of_all_authorizations", "escalate-to-account-manager"])
    assert "CHF 98,765.43" in text and "12,345.670 KWD" not in text     # (KWD's case is recovered: not listed)


@pytest.mark.parametrize("columns", [80, 200])
def test_report_never_splits_an_amount(config, columns):
    text = on_a_terminal(config, columns, "report", "--now", iso(NOW))
    headline = build_report(open_engine_ledger(config), NOW).headline
    amounts = [format_amount(c.amount_recovered, c.currency) for c in headline.currencies]
    amounts += [format_amount(c.revenue_at_risk, c.currency) for c in headline.currencies]
    assert "CHF 98,765.43" in amounts and "1,234.567 KWD" in amounts
    check(text, columns, amounts)
    # Each headline metric is named whole: a long value goes on to a next line rather than cut the name short
    metrics = [row[0] for row in headline_rows(headline)]
    assert "Recovered of failed amount (CHF)" in metrics and "Involuntary churn" in metrics
    check(text, columns, metrics)


def test_the_demo_shows_its_progress_on_a_terminal_and_only_there(config, tmp_path):
    # Off a terminal the bar is not even built (Rich's progress module stays unloaded: issue #25); on one it must
    # still be drawn while the ticks run, then give way to the summary.
    text = on_a_terminal(config, 80, "demo", str(tmp_path / "demo"), "--customers", "20", "--days", "2",
                         "--follow-up", "0")
    assert re.search(r"day 2026-11-0\d \d\d:\d\d", text), text
    assert "Simulated 20 customers for 2 days" in text
    piped = subprocess.run([sys.executable, "-m", "dunctl", "demo", str(tmp_path / "piped"), "--customers", "20",
                            "--days", "2", "--follow-up", "0"], capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert "day 2026-11-0" not in piped.stdout + piped.stderr
    assert "Simulated 20 customers for 2 days" in piped.stdout
