"""A tick interrupted for real: SIGTERM or Ctrl-C (SIGINT) mid-send stops it cleanly, SIGKILL mid-send leaves only
the message in flight `unknown`. Real `dunctl tick` processes, a real SMTP server, the ledger a real file."""

import signal
import time

import pytest

from tests.helpers import at, customer, dunctl_process, failed_invoice, open_engine_ledger, seed, starter
from tests.servers import SmtpServer
from tests.test_concurrency import BlackHoleSmtp, SlowSmtpServer


def smtp_config(directory, host, port, **settings):
    return starter(directory, **{"channels.email": {"transport": "smtp", "host": host, "port": port, **settings}})


def book(config, n: int):
    """n failed invoices of n customers: each case's first email is due at 31m."""
    ledger = open_engine_ledger(config)
    seed(ledger, *[failed_invoice(f"in_{i}", customer_id=f"cus_{i}") for i in range(n)],
         customers=[customer(f"cus_{i}", email=f"c{i}@example.com") for i in range(n)])
    return ledger


def notices(ledger) -> dict[str, str]:
    return {c["invoice_id"]: a["status"] for c in ledger.cases.listed() for a in ledger.actions(c["id"])
            if a["step_id"] == "notice"}


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            pytest.fail("timed out")
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_tick_finishes_the_send_in_flight_gives_the_rest_back_and_exits_130(tmp_path, signum):
    with SlowSmtpServer(delay=0.1) as smtp:
        config = smtp_config(tmp_path, smtp.host, smtp.port)
        ledger = book(config, 20)
        tick = dunctl_process(config, "tick", "--no-sync", "--now", at("31m").isoformat())
        wait_for(lambda: len(smtp.received) >= 3)
        tick.send_signal(signum)
        assert tick.wait(timeout=30) == 130
        lines = [line for line in (tick.stdout.read() + tick.stderr.read()).splitlines() if line.strip()]
        received = {r.rcpt_tos[0] for r in smtp.received}
        assert len(received) == len(smtp.received) < 20
        statuses = notices(ledger)
        # what was sent is recorded as sent; at most the one in flight is unknown; the rest were given back
        assert sorted(i for i, s in statuses.items() if s == "done") == sorted(f"in_{a[1:-12]}" for a in received)
        assert list(statuses.values()).count("unknown") <= 1
        assert set(statuses.values()) <= {"done", "unknown"}
        assert len(lines) == 1 and lines[0].startswith(f"interrupted by {signal.Signals(signum).name}: "), lines
        assert f"ran {len(received)} action(s)" in lines[0] and "given back for the next tick" in lines[0]

        after = dunctl_process(config, "tick", "--no-sync", "--now", at("32m").isoformat())
        assert after.wait(timeout=60) == 0, after.stderr.read()
        unknown = list(notices(ledger).values()).count("unknown")
        if unknown:
            assert "1 action has an unknown outcome" in after.stderr.read()
    everyone = sorted(r.rcpt_tos[0] for r in smtp.received)
    assert len(everyone) == len(set(everyone)) == 20 - unknown          # the rest, each once
    assert list(notices(ledger).values()).count("done") == 20 - unknown


def test_a_tick_killed_mid_send_leaves_only_the_message_in_flight_unknown_and_says_so(tmp_path):
    hole = BlackHoleSmtp()   # the first message hangs in flight: the kill lands mid-send, always
    config = smtp_config(tmp_path, "127.0.0.1", hole.port, timeout=60)
    ledger = book(config, 5)
    tick = dunctl_process(config, "tick", "--no-sync", "--now", at("31m").isoformat())
    wait_for(lambda: hole.connections and "claimed" in notices(ledger).values())
    tick.kill()
    tick.wait()
    hole.close()
    assert list(notices(ledger).values()).count("claimed") == 5          # the whole batch was claimed

    with SmtpServer() as smtp:
        working = starter(tmp_path / "fixed", **{"channels.email": {"transport": "smtp", "host": smtp.host,
                                                                    "port": smtp.port},
                                                 "ledger.path": str(ledger.path)})
        after = dunctl_process(working, "tick", "--no-sync", "--now", at("40m").isoformat())
        assert after.wait(timeout=60) == 0
        stderr = after.stderr.read()
        idle = dunctl_process(working, "tick", "--no-sync", "--now", at("45m").isoformat())
        assert idle.wait(timeout=60) == 0
        idle_out, idle_err = idle.stdout.read(), idle.stderr.read()
    statuses = notices(ledger)
    assert sorted(statuses.values()) == ["done"] * 4 + ["unknown"]      # the 4 never started went out after all
    assert len(smtp.received) == 4
    unknown = next(i for i, s in statuses.items() if s == "unknown")
    assert f"c{unknown[3:]}@example.com" not in {r.rcpt_tos[0] for r in smtp.received}
    assert "1 action has an unknown outcome: check it, then `dunctl case resolve`" in stderr
    # every tick says so, an idle one too: on stderr, one line, nothing on stdout (cron's silence otherwise)
    assert idle_out == "" and idle_err.strip().splitlines() == [
        "1 action has an unknown outcome: check it, then `dunctl case resolve` (`dunctl status` lists them)"]


def test_after_a_reboot_a_claim_without_its_started_mark_counts_as_started(tmp_path):
    """"Started" is committed without waiting for the disk: it survives the process dying, not a power loss. A claim
    left by a tick of an earlier boot may have lost its mark, so it is `unknown`, never sent again by itself."""
    from tests.helpers import cli

    with SmtpServer() as smtp:
        config = smtp_config(tmp_path, smtp.host, smtp.port)
        ledger = book(config, 2)
        assert cli(config, "tick", "--no-sync", "--now", at("10m").isoformat()).exit_code == 0   # opens the cases
        ids = {}
        for i, boot in ((0, "an-earlier-boot"), (1, None)):
            tick = ledger.conn.execute("INSERT INTO ticks(now, boot_id) VALUES (?, ?)",
                                       [at("31m").isoformat(), boot]).lastrowid
            case_id = ledger.cases.for_invoice(f"in_{i}")["id"]
            ids[i] = ledger.journal("actions").claim_action(case_id, "step", "notice", "email", "email", "customer", at("30m"),
                                         at("31m"), f"dunctl-in_{i}-notice", tick)
        assert cli(config, "tick", "--no-sync", "--now", at("40m").isoformat()).exit_code == 0
    assert notices(ledger) == {"in_0": "unknown", "in_1": "done"}   # a tick whose commits were all durable: given back
    assert [r.rcpt_tos[0] for r in smtp.received] == ["c1@example.com"]


def test_a_disk_full_mid_batch_leaves_at_most_one_unknown_and_the_next_tick_sends_the_rest(tmp_path, monkeypatch):
    from email import message_from_bytes

    from dunctl.ledger import Ledger
    from tests.helpers import cli

    config = starter(tmp_path)                       # emails into the outbox directory (the file transport)
    ledger = book(config, 40)
    ledger.close()
    assert cli(config, "tick", "--no-sync", "--now", at("10m").isoformat()).exit_code == 0   # opens the cases
    real_open = Ledger.open.__func__

    def full_disk_open(cls, path, **options):
        # SQLite's own limit makes the disk "full" at the ledger's current size (SQLITE_FULL): the claims and the
        # started marks still fit, recording the first batch's results does not
        opened = real_open(cls, path, **options)
        opened.conn.execute(f"PRAGMA max_page_count = {opened.conn.execute('PRAGMA page_count').fetchone()[0]}")
        return opened

    monkeypatch.setattr(Ledger, "open", classmethod(full_disk_open))
    full = cli(config, "tick", "--no-sync", "--now", at("31m").isoformat())
    monkeypatch.undo()
    assert full.exit_code == 2 and "is full" in full.stderr
    sent_then = len(list((tmp_path / "outbox").glob("*.eml")))
    assert 1 <= sent_then < 40                       # it filled up mid-tick, after some emails went out
    after = cli(config, "tick", "--no-sync", "--now", at("32m").isoformat())
    assert after.exit_code == 0, after.output
    statuses = list(notices(open_engine_ledger(config)).values())
    assert statuses.count("unknown") <= 1 and statuses.count("done") == 40 - statuses.count("unknown")
    recipients = [message_from_bytes(p.read_bytes())["To"] for p in (tmp_path / "outbox").glob("*.eml")]
    assert len(recipients) == len(set(recipients)) == 40                  # the rest, each once
    if statuses.count("unknown"):
        assert "1 action has an unknown outcome" in after.stderr


def test_a_tick_asked_to_stop_before_it_acts_claims_nothing_and_leaves_everything_due(tmp_path):
    from dunctl.config import load_config
    from dunctl.tick import build_channels, run_tick

    config = starter(tmp_path)
    ledger = book(config, 3)
    loaded = load_config(config)
    stopped = run_tick(ledger, loaded, None, build_channels(loaded, {}), at("31m"), sync=False,
                       interrupted=lambda: True)
    assert stopped.interrupted and stopped.actions == [] and stopped.deferred == 3
    assert ledger.db.execute("SELECT count(*) FROM actions").fetchone()[0] == 0   # nothing claimed, nothing missed
    again = run_tick(ledger, loaded, None, build_channels(loaded, {}), at("32m"), sync=False)
    assert not again.interrupted and sorted(notices(ledger).values()) == ["done"] * 3
